"""The project's ground rules: torch stays in the encoder, and the contract is discoverable."""

import subprocess
import sys

import grpc
from conftest import running_search
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def test_search_service_client_and_web_never_import_torch() -> None:
    probe = (
        "import sys, search_service.server, search_service.__main__, client, client.cli, demo.command, "
        "web.server, web.__main__; "
        "heavy = sorted(name for name in ('torch', 'clip', 'torchvision') if name in sys.modules); "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_both_services_answer_reflection(tiny_encoder, tmp_path) -> None:
    with running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search:
        for address, service in (
            (tiny_encoder.grpc.address, "imagesearch.v1.EncoderService"),
            (search.grpc.address, "imagesearch.v1.SearchService"),
        ):
            with grpc.insecure_channel(address) as channel:
                services = ProtoReflectionDescriptorDatabase(channel).get_services()
            assert service in services and "grpc.health.v1.Health" in services
