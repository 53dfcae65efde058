"""Metrics, request ids and token authentication, through real servers."""

import logging
import urllib.request

import grpc
import pytest
from conftest import encoder_stub, running_encoder, running_search, search_stub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from test_search import folder, requests

from client import ImageSearchError, SearchClient
from client.cli import EXIT_FAILED, main
from imagesearch.v1 import encoder_pb2, search_pb2


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the /metrics page, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_calls_batches_outcomes_and_milvus_time(tiny_encoder, tmp_path) -> None:
    with running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search:
        encoder_before = scrape(tiny_encoder.grpc.metrics.server_port)
        with search_stub(search.grpc.address) as stub:
            list(stub.Ingest(requests(folder(3, 900))))
            stub.SearchText(search_pb2.SearchTextRequest(text="a dog"))
        encoder, served = (
            scrape(tiny_encoder.grpc.metrics.server_port),
            scrape(search.grpc.metrics.server_port),
        )

    def moved(samples: dict, before: dict, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return samples.get(key, 0.0) - before.get(key, 0.0)

    assert moved(encoder, encoder_before, "grpc_server_handled_total", method="EncodeImages", code="OK") >= 1
    assert moved(encoder, encoder_before, "encoder_batch_size_sum", tower="image") == 3
    assert moved(encoder, encoder_before, "encoder_forward_seconds_count", tower="text") >= 1
    assert encoder[("encoder_model_loaded", ())] == 1
    assert ("encoder_queue_depth", (("tower", "image"),)) in encoder
    assert served[("search_ingest_items_total", (("outcome", "stored"),))] == 3
    assert served[("grpc_server_handled_total", (("code", "OK"), ("method", "SearchText")))] == 1
    assert served[("search_milvus_seconds_count", (("operation", "upsert into"),))] >= 1
    assert served[("search_encoder_seconds_count", (("method", "EncodeText"),))] == 1


def test_request_id_follows_a_call_into_the_encoder(tiny_encoder, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="imagesearch.access")
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search,
        search_stub(search.grpc.address) as stub,
    ):
        list(stub.Ingest(requests(folder(2, 950)), metadata=[("x-request-id", "trace-ingest-1")]))
    calls = {(r.fields["method"], r.fields["request_id"]) for r in caplog.records if hasattr(r, "fields")}
    assert ("Ingest", "trace-ingest-1") in calls
    assert ("EncodeImages", "trace-ingest-1") in calls  # made by the search service, on a worker thread


@pytest.fixture(scope="module")
def guarded(tiny_path, tmp_path_factory):
    """An encoder and a search service that both demand tokens; the search service holds the encoder's."""
    with (
        running_encoder(tiny_path, auth_tokens="encoder-secret") as encoder,
        running_search(
            encoder.grpc.address,
            tmp_path_factory.mktemp("guarded") / "milvus.db",
            auth_tokens="alice-token,bob-token",
            encoder_token="encoder-secret",
        ) as search,
    ):
        yield search.grpc.address, encoder.grpc.address


def test_calls_without_the_right_token_are_unauthenticated_and_store_nothing(guarded) -> None:
    guarded, _ = guarded
    for token in (None, "wrong-token"):
        with SearchClient(guarded, token=token) as client, pytest.raises(ImageSearchError) as refused:
            client.search_text("a dog")
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        with search_stub(guarded) as stub, pytest.raises(grpc.RpcError) as stream_refused:
            list(stub.Ingest(requests(folder(2, 970)), metadata=[("authorization", f"Bearer {token}")]))
        assert stream_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with SearchClient(guarded, token="bob-token") as client, pytest.raises(ImageSearchError) as missing:
        client.stats()
    assert missing.value.code == grpc.StatusCode.NOT_FOUND  # nothing was ever stored


def test_the_right_token_gets_through_both_services(guarded, tmp_path) -> None:
    guarded, _ = guarded
    (tmp_path / "a.png").write_bytes(folder(1, 980)[0][1])
    with SearchClient(guarded, token="alice-token") as client:
        assert client.ingest([tmp_path]).stored == 1
        assert len(client.search_text("a dog", top_k=1)) == 1


def test_health_stays_open_without_a_token(guarded) -> None:
    for address in guarded:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_the_encoder_encodes_nothing_without_its_token(guarded) -> None:
    _, encoder_address = guarded
    request = encoder_pb2.EncodeImagesRequest(images=[folder(1, 985)[0][1]])
    service_token = [("authorization", "Bearer encoder-secret")]
    with encoder_stub(encoder_address) as stub:
        before = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), metadata=service_token).images_encoded
        for metadata in ([], [("authorization", "Bearer alice-token")]):
            with pytest.raises(grpc.RpcError) as refused:
                stub.EncodeImages(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        after = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), metadata=service_token).images_encoded
    assert after == before


def test_cli_says_the_token_is_missing(guarded, capsys) -> None:
    assert main(["--server", guarded[0], "stats"]) == EXIT_FAILED
    assert "UNAUTHENTICATED: missing bearer token" in capsys.readouterr().err
