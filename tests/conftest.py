"""Shared fixtures: checkpoints the tests make themselves, and real encoder servers on loopback ports."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings

from encoder_service.checkpoints import TINY, VIT_B_32, random_clip, save_state_dict, save_torchscript
from encoder_service.config import EncoderConfig
from encoder_service.server import EncoderServer
from imagesearch.v1 import encoder_pb2_grpc, search_pb2_grpc
from search_service.config import SearchConfig
from search_service.server import SearchServer


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def vit_b32_path(checkpoint_dir: Path) -> Path:
    """A randomly initialised ViT-B/32 as a plain state dict: the real architecture and cost."""
    path = checkpoint_dir / "random-vit-b32.pt"
    save_state_dict(random_clip(VIT_B_32), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_path(checkpoint_dir: Path) -> Path:
    path = checkpoint_dir / "tiny.pt"
    save_state_dict(random_clip(TINY), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_torchscript_path(checkpoint_dir: Path) -> Path:
    path = checkpoint_dir / "tiny.torchscript.pt"
    save_torchscript(random_clip(TINY), str(path))
    return path


@contextmanager
def running_encoder(model: Path, **settings: object) -> Iterator[EncoderServer]:
    config = dataclasses.replace(
        EncoderConfig(model=str(model), device="cpu", port=0, metrics_port=0), **settings
    )
    server = EncoderServer(config)
    server.start()
    try:
        server.load()
        yield server
    finally:
        server.stop()


@contextmanager
def encoder_stub(address: str) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    with grpc.insecure_channel(address) as channel:
        yield encoder_pb2_grpc.EncoderServiceStub(channel)


@pytest.fixture(scope="session")
def vit_encoder(vit_b32_path: Path) -> Iterator[EncoderServer]:
    with running_encoder(vit_b32_path) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_encoder(tiny_path: Path) -> Iterator[EncoderServer]:
    with running_encoder(tiny_path) as server:
        yield server


@pytest.fixture
def vit_stub(vit_encoder: EncoderServer) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    assert vit_encoder.grpc is not None
    with encoder_stub(vit_encoder.grpc.address) as stub:
        yield stub


@contextmanager
def running_search(encoder_target: str, milvus_uri: Path | str, **settings: object) -> Iterator[SearchServer]:
    config = dataclasses.replace(
        SearchConfig(
            encoder=encoder_target, milvus_uri=str(milvus_uri), port=0, metrics_port=0, encoder_timeout_s=20.0
        ),
        **settings,
    )
    server = SearchServer(config)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def standing_in(
    service: Any,
    register: Callable[[Any, grpc.Server], None] = encoder_pb2_grpc.add_EncoderServiceServicer_to_server,
) -> Iterator[tuple[str, Any]]:
    """A stand-in `service` (an encoder's by default), in front of a real one that it reaches on its
    `channel`, served on a loopback port: its address, and itself."""
    server = grpc.server(ThreadPoolExecutor(4))
    register(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(None)
        service.channel.close()


def lite_process(db_file: Path) -> int:
    """The Milvus Lite process that serves `db_file` (started by this test process's search service)."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and str(db_file).encode() in command and b"milvus" in command[0]:
            return int(entry.name)
    raise AssertionError(f"no Milvus Lite process serves {db_file}")


@pytest.fixture(scope="module")
def search(tiny_encoder: EncoderServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchServer]:
    """A search service on the tiny encoder, with a Milvus Lite file of the test module's own."""
    assert tiny_encoder.grpc is not None
    milvus = tmp_path_factory.mktemp("milvus") / "milvus.db"
    with running_search(tiny_encoder.grpc.address, milvus) as server:
        yield server


@pytest.fixture
def stub(search: SearchServer) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    assert search.grpc is not None
    with search_stub(search.grpc.address) as stub:
        yield stub


@pytest.fixture
def collection(request: pytest.FixtureRequest) -> str:
    """A collection of the test's own in the module's Milvus Lite file."""
    return request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:200]


@contextmanager
def search_stub(address: str) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    with grpc.insecure_channel(address) as channel:
        yield search_pb2_grpc.SearchServiceStub(channel)


def logged_address(log_line: str) -> str:
    """The address in a JSON log line "... on HOST:PORT ..." (the services' ready lines)."""
    return json.loads(log_line)["message"].rsplit(" on ", 1)[1].split()[0]


@contextmanager
def service_process(module: str, ready: str, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m module args...` on a free port, once it logs `ready`; killed at the end."""
    command = [sys.executable, "-m", module, "--port", "0", "--metrics-port", "0", *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        address = next(logged_address(line) for line in process.stderr if ready in line)
        # Keep reading its log, so that a full pipe never blocks the service.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield process, address
    finally:
        process.kill()
        process.wait()


def encoder_process(model: Path, *flags: str):  # type: ignore[no-untyped-def]
    return service_process(
        "encoder_service", "encoder serving", "--model", str(model), "--device", "cpu", *flags
    )


def wait_for_health(address: str, wanted: int, timeout_s: float = 60.0) -> None:
    """Follows the health Watch stream of the server at `address` until it reports `wanted`."""
    with grpc.insecure_channel(address) as channel:
        updates = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=timeout_s
        )
        for update in updates:
            if update.status == wanted:
                updates.cancel()
                return


# Bounded fuzzing in CI; `HYPOTHESIS_PROFILE=long` runs a thousand times more examples. No deadline per
# example: tests assert behaviour, not time, and a shared 2-core machine made a 114 ms example take 251 ms.
settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("long", max_examples=60_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
