"""Faults on loopback: a killed search service, lost encoders, an unreachable Milvus server; nothing lost."""

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from conftest import (
    lite_process,
    running_encoder,
    running_search,
    search_stub,
    service_process,
    standing_in,
    wait_for_health,
)
from grpc_health.v1 import health_pb2
from milvus_lite.server import Server as MilvusLiteServer
from pymilvus import DataType, MilvusClient
from test_operability import scrape
from test_search import FAILED, PRESENT, STORED, folder, requests

from client import AsyncSearchClient, ImageSearchError, SearchClient
from client.cli import main
from client.local import free_port
from encoder_service.config import EncoderConfig
from encoder_service.server import EncoderServer
from imagesearch.errors import ServiceError
from imagesearch.headers import SERVED_BY
from imagesearch.v1 import encoder_pb2_grpc, search_pb2
from search_service.encoder_replicas import EncoderReplicas


def test_search_service_killed_mid_ingest_then_rerun_stores_each_picture_once(tiny_encoder, tmp_path) -> None:
    milvus = str(tmp_path / "milvus.db")
    args = ["--encoder", tiny_encoder.grpc.address, "--milvus-uri", milvus]
    pictures = folder(60, 2000)
    killed = threading.Event()

    def stream() -> Iterator[search_pb2.IngestRequest]:
        yield from requests(pictures[:20], metadata={"batch": "first"})
        killed.wait(timeout=60)  # the rest is sent to a dead service
        yield from requests(pictures[20:], metadata={"batch": "first"})

    reported: list[search_pb2.IngestResponse] = []
    with (
        service_process("search_service", "search service listening", *args) as (process, address),
        search_stub(address) as stub,
    ):
        with pytest.raises(grpc.RpcError) as broken:
            for result in stub.Ingest(stream()):
                reported.append(result)
                if len(reported) == 10:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    killed.set()
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(reported) >= 10 and {r.outcome for r in reported} == {STORED}

    with (
        service_process("search_service", "search service listening", *args) as (_, address),
        search_stub(address) as stub,
    ):
        rerun = list(stub.Ingest(requests(pictures, metadata={"batch": "first"})))
        ids = [r.id for r in rerun]
        records = stub.Get(search_pb2.GetRequest(ids=ids, output_fields=["vector"])).records
        count = stub.Stats(search_pb2.StatsRequest()).count
    assert {r.id for r in reported if r.outcome == STORED} <= {r.id for r in rerun if r.outcome == PRESENT}
    assert rerun[-1].totals.stored + rerun[-1].totals.present == 60 and count == 60
    assert len(set(ids)) == 60 and len(records) == 60
    assert all(len(r.vector) == 512 and r.metadata == {"batch": "first"} and r.uri for r in records)


def test_queries_fail_clearly_while_every_encoder_is_down_and_recover(tiny_path, tmp_path) -> None:
    ports = [free_port(), free_port()]
    target = ",".join(f"127.0.0.1:{port}" for port in ports)
    query = search_pb2.SearchTextRequest(text="a dog")
    replicas = [
        EncoderServer(EncoderConfig(model=str(tiny_path), device="cpu", port=port, metrics_port=-1))
        for port in ports
    ]
    for replica in replicas:
        replica.start()
        replica.load()
    with (
        running_search(target, tmp_path / "milvus.db", encoder_timeout_s=5.0) as search,
        search_stub(search.grpc.address) as stub,
    ):
        list(stub.Ingest(requests(folder(3, 2100))))
        replicas[1].stop()
        assert len(stub.SearchText(query).hits) == 3  # one replica is enough
        replicas[0].stop()
        with pytest.raises(grpc.RpcError) as down:
            stub.SearchText(query)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"encoder at {target}" in down.value.details()
        assert search.check_health() is False
        with running_encoder(tiny_path, port=ports[1]):
            assert search.check_health() is True
            assert len(stub.SearchText(query).hits) == 3


class Overloaded(encoder_pb2_grpc.EncoderServiceServicer):
    """In front of a real encoder: answers its first `refusals` EncodeImages and EncodeText calls as an
    encoder whose queue is full does (and says when it first did), and passes every other call through."""

    def __init__(self, encoder: str, refusals: int) -> None:
        self.channel = grpc.insecure_channel(encoder)
        self.encoder = encoder_pb2_grpc.EncoderServiceStub(self.channel)
        self.refusals = refusals
        self.lock = threading.Lock()
        self.refused = threading.Event()

    def GetModelInfo(self, request, context):
        return self.encoder.GetModelInfo(request)

    def EncodeText(self, request, context):
        self._maybe_refuse(context)
        return self.encoder.EncodeText(request)

    def EncodeImages(self, request, context):
        self._maybe_refuse(context)
        return self.encoder.EncodeImages(request)

    def _maybe_refuse(self, context) -> None:
        with self.lock:
            self.refusals -= 1
            refused = self.refusals >= 0
        if refused:
            self.refused.set()
            # As the encoder's own code answers: naming itself, where gRPC's own refusals do not.
            context.set_trailing_metadata([(SERVED_BY, "imagesearch.v1.EncoderService")])
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the queue is full; retry later")


class Stalling(Overloaded):
    """In front of a real encoder: holds every call of pictures or texts until `released` is set (a GPU that
    hangs), and says when the first one arrived, and when one ended while held (its caller cancelled it)."""

    def __init__(self, encoder: str) -> None:
        super().__init__(encoder, refusals=0)
        self.arrived, self.released, self.abandoned = threading.Event(), threading.Event(), threading.Event()

    def _hold(self, context) -> None:  # type: ignore[no-untyped-def]
        # A call's callbacks run when it ends; this one cannot end on its own while it is held here.
        context.add_callback(lambda: None if self.released.is_set() else self.abandoned.set())
        self.arrived.set()
        self.released.wait(timeout=120)

    def EncodeImages(self, request, context):
        self._hold(context)
        return super().EncodeImages(request, context)

    def EncodeText(self, request, context):
        self._hold(context)
        return super().EncodeText(request, context)


@contextmanager
def overloaded(encoder: str, refusals: int) -> Iterator[tuple[str, Overloaded]]:
    with standing_in(Overloaded(encoder, refusals)) as served:
        yield served


def test_an_overloaded_encoder_slows_an_ingest_down_without_failing_it(
    tiny_encoder, tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="search_service.encoder_replicas")
    # More refusals in a row than the retries an unavailable encoder gets (5).
    with (
        overloaded(tiny_encoder.grpc.address, refusals=7) as (target, proxy),
        running_search(target, tmp_path / "milvus.db") as search,
        search_stub(search.grpc.address) as stub,
    ):
        results = list(stub.Ingest(requests(folder(4, 2300))))
    assert proxy.refusals < 0  # every refusal was answered, and the next call went through
    assert [result.outcome for result in results] == [STORED] * 4
    # The encoders' backpressure, as designed, is no warning: a busy ingest met it all the time.
    retries = [record.levelname for record in caplog.records if "retrying" in record.getMessage()]
    assert retries == ["INFO"] * 7


class Unavailable(Overloaded):
    """In front of a real encoder: says it takes 2 pictures a call, and answers every call of pictures
    UNAVAILABLE (a GPU lost for good)."""

    def GetModelInfo(self, request, context):
        info = self.encoder.GetModelInfo(request)
        info.max_items_per_request = 2
        return info

    def EncodeImages(self, request, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, "the GPU is gone")


def test_a_stream_that_fails_lets_its_reader_go_though_it_waited_for_room(tiny_encoder, tmp_path) -> None:
    """The reader of a stream waits for room (2 pictures a call, 1 batch in flight: 4 at a time) while the
    client has more to send; once the stream fails, it must end too, and let go of the pictures it holds."""
    with (
        standing_in(Unavailable(tiny_encoder.grpc.address, refusals=0)) as (target, _),
        running_search(target, tmp_path / "milvus.db", ingest_in_flight=1, encoder_timeout_s=10.0) as search,
        search_stub(search.grpc.address) as stub,
    ):
        with pytest.raises(grpc.RpcError) as failed:
            list(stub.Ingest(requests(folder(40, 2500))))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        for _ in range(200):  # a bounded poll: the reader looks every second whether its stream has ended
            if not any(thread.name == "ingest-reader" for thread in threading.enumerate()):
                break
            threading.Event().wait(0.05)
        assert not any(thread.name == "ingest-reader" for thread in threading.enumerate())


def test_ctrl_c_during_an_ingest_reports_what_was_answered_and_what_was_not_done(
    tiny_encoder, tmp_path, capsys
) -> None:
    """Ctrl-C used to end `imgsearch ingest` with nothing printed, while its stream went on."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "0-notes.txt").write_text("settled by the client: the first result")
    for name, image in folder(3):
        (pictures / Path(name).name).write_bytes(image)
    main_thread = threading.main_thread().ident
    assert main_thread is not None and threading.get_ident() == main_thread  # where Python raises it

    def press_ctrl_c(proxy: Stalling) -> None:
        if proxy.arrived.wait(timeout=60):  # the pictures are with the encoder, which holds them
            signal.pthread_kill(main_thread, signal.SIGINT)

    with (
        standing_in(Stalling(tiny_encoder.grpc.address)) as (target, proxy),
        running_search(target, tmp_path / "milvus.db") as search,
    ):
        threading.Thread(target=press_ctrl_c, args=(proxy,), daemon=True).start()
        try:
            code = main(["--server", search.grpc.address, "ingest", str(pictures), "--no-progress"])
        finally:
            proxy.released.set()
    out, err = capsys.readouterr()
    assert code == 130
    assert out == "stored 0, already present 0, failed 0, skipped 1 (not images), not done 3\n"
    assert err == "imgsearch: interrupted (Ctrl-C)\n"


@contextmanager
def behind_a_hanging_encoder(encoder: str, folder_path: Path, seed: int) -> Iterator[tuple]:
    """A search service with one handler thread and one picture stored, whose encoder hangs from then on:
    its stub, the stalling proxy, the service, and the picture."""
    [(uri, image)] = folder(1, seed)
    with (
        standing_in(Stalling(encoder)) as (target, proxy),
        running_search(target, folder_path / "milvus.db", grpc_workers=1, encoder_timeout_s=60.0) as search,
        search_stub(search.grpc.address) as stub,
    ):
        try:
            proxy.released.set()
            assert [result.outcome for result in stub.Ingest(requests([(uri, image)]))] == [STORED]
            proxy.released.clear()
            proxy.arrived.clear()
            yield stub, proxy, search, image
        finally:
            proxy.released.set()


def test_a_client_closed_under_its_calls_fails_them_with_its_own_error(tiny_encoder, tmp_path) -> None:
    """The asyncio client's callers got a bare asyncio.CancelledError, which asyncio takes for a cancel of
    their own task; the blocking client's got gRPC's "Channel closed!"."""

    async def search_then_close(address: str, proxy: Stalling, image: bytes) -> ImageSearchError:
        client = AsyncSearchClient(address)
        searching = asyncio.create_task(client.search_image(image))
        assert await asyncio.to_thread(proxy.arrived.wait, 60)
        await client.close()
        with pytest.raises(ImageSearchError) as closed:
            await searching
        return closed.value

    def search_in_a_thread(client: SearchClient, image: bytes, errors: list[ImageSearchError]) -> None:
        try:
            client.search_image(image)
        except ImageSearchError as error:
            errors.append(error)

    with behind_a_hanging_encoder(tiny_encoder.grpc.address, tmp_path, 2600) as (_, proxy, search, image):
        closed = [asyncio.run(search_then_close(search.grpc.address, proxy, image))]
        proxy.arrived.clear()
        client = SearchClient(search.grpc.address)
        searching = threading.Thread(target=search_in_a_thread, args=(client, image, closed))
        searching.start()
        assert proxy.arrived.wait(60)
        client.close()
        searching.join()
    said = f"this client of the search service at {search.grpc.address} was closed during the call"
    assert [(error.code, error.message) for error in closed] == [(grpc.StatusCode.CANCELLED, said)] * 2


def test_an_encoder_call_gets_no_more_time_than_its_caller_has_left(tiny_encoder, tmp_path) -> None:
    """Each encoder call had the search service's own deadline (60 s, retries included) whatever its caller
    had left: a search whose caller had given up held a handler thread, and the encoder, for a minute."""
    with behind_a_hanging_encoder(tiny_encoder.grpc.address, tmp_path, 2400) as (stub, _, search, image):
        # A text's call is a plain blocking one, which no cancel ends: only its deadline does.
        for search_for in (
            lambda: stub.SearchImage(search_pb2.SearchImageRequest(image=image), timeout=2.0),
            lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a dog"), timeout=2.0),
        ):
            with pytest.raises(grpc.RpcError) as gave_up:
                search_for()
            assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The service's own answer, just before the caller's deadline: it names whom it waited for (the
            # caller's own cut, at its deadline, said nothing more than "Deadline Exceeded").
            assert re.fullmatch(r"encoder at \S+: DEADLINE_EXCEEDED: .*", gave_up.value.details())
            # The service's only handler thread is free again: the search ended with its caller's deadline.
            assert stub.Stats(search_pb2.StatsRequest(), timeout=10).count == 1
        encoder_calls = scrape(search.grpc.metrics.server_port)
    # Cut for their caller's deadline, not the service's own: not counted as the encoder's slowness.
    for method in ("EncodeImages", "EncodeText"):
        assert (
            encoder_calls[("search_encoder_seconds_count", (("code", "CANCELLED"), ("method", method)))] == 1
        )


def test_a_caller_that_cancels_its_search_cancels_the_encoder_call_it_waited_for(
    tiny_encoder, tmp_path, caplog
) -> None:
    """A search its caller cancelled went on waiting for the encoder until the service's own deadline (60 s),
    holding a handler thread, and the encoder went on with it for nobody."""
    caplog.set_level(logging.INFO, logger="imagesearch.access")
    with behind_a_hanging_encoder(tiny_encoder.grpc.address, tmp_path, 2401) as (stub, proxy, search, image):
        searching = stub.SearchImage.future(search_pb2.SearchImageRequest(image=image))
        assert proxy.arrived.wait(timeout=60)
        searching.cancel()
        assert proxy.abandoned.wait(timeout=10)  # the encoder's caller went too
        # The service's only handler thread is free again.
        assert stub.Stats(search_pb2.StatsRequest(), timeout=10).count == 1
        encoder_calls = scrape(search.grpc.metrics.server_port)
    [search_line] = [r for r in caplog.records if getattr(r, "fields", {}).get("method") == "SearchImage"]
    assert search_line.fields["code"] == "CANCELLED"
    # The encoder call counts as given up for its caller, not as the encoder's failure.
    cancelled = ("search_encoder_seconds_count", (("code", "CANCELLED"), ("method", "EncodeImages")))
    assert encoder_calls[cancelled] == 1


def test_a_search_whose_caller_cancelled_stops_retrying_a_full_encoder(tiny_encoder, tmp_path) -> None:
    """Against a full encoder queue, a text search whose caller had cancelled went on retrying until the
    service's own deadline (60 s), holding a handler thread: between tries it slept without looking."""
    with (
        overloaded(tiny_encoder.grpc.address, refusals=0) as (target, proxy),
        running_search(target, tmp_path / "milvus.db", grpc_workers=1, encoder_timeout_s=60.0) as search,
        search_stub(search.grpc.address) as stub,
    ):
        assert [result.outcome for result in stub.Ingest(requests(folder(1, 2402)))] == [STORED]
        with proxy.lock:
            proxy.refusals = 1_000_000
        searching = stub.SearchText.future(search_pb2.SearchTextRequest(text="a white dog"))
        assert proxy.refused.wait(timeout=60)
        searching.cancel()
        # The service's only handler thread is free again.
        assert stub.Stats(search_pb2.StatsRequest(), timeout=10).count == 1
        encoder_calls = scrape(search.grpc.metrics.server_port)
    assert (
        encoder_calls[("search_encoder_seconds_count", (("code", "CANCELLED"), ("method", "EncodeText")))]
        == 1
    )


def test_a_call_over_the_encoders_message_limit_fails_at_once_not_as_a_full_queue(tiny_path, caplog) -> None:
    """gRPC itself refuses a message over the encoder's limit with RESOURCE_EXHAUSTED too; retrying that as a
    full queue would hold the call until its deadline, for nothing."""
    caplog.set_level(logging.INFO, logger="search_service.encoder_replicas")
    with running_encoder(tiny_path, max_items_per_request=1, max_image_bytes=1000) as encoder:
        assert encoder.grpc is not None
        replicas = EncoderReplicas(encoder.grpc.address, 10.0)
        try:
            with pytest.raises(ServiceError) as refused:
                replicas.encode_images([b"\xff" * (2 << 20)])  # over 1000 bytes + 1 MiB of room
        finally:
            replicas.close()
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retrying" not in caplog.text


def test_pictures_over_the_encoders_limit_fail_alone_in_an_ingest(tiny_path, tmp_path) -> None:
    """Sent to the encoder with their batch, they took its call past the encoder's message limit: the whole
    stream ended RESOURCE_EXHAUSTED, naming no picture."""
    [(uri, image)] = folder(1, 2500)
    large = [(f"large/{n}.png", bytes([n]) * 200_000) for n in range(8)]  # 8 x 200 KB: over 8 x 20 KB + 1 MiB
    with (
        running_encoder(tiny_path, max_items_per_request=8, max_image_bytes=20_000) as encoder,
        running_search(encoder.grpc.address, tmp_path / "milvus.db") as search,
        search_stub(search.grpc.address) as stub,
    ):
        results = list(stub.Ingest(requests([*large, (uri, image)])))
    assert [result.outcome for result in results] == [FAILED] * 8 + [STORED]
    assert {result.error for result in results[:8]} == {"200000 bytes is over the limit of 20000 bytes"}


def wait_until_listening(port: int, attempts: int = 600) -> None:
    for _ in range(attempts):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            threading.Event().wait(0.05)  # a bounded poll of a condition, not a guess at a duration
    raise TimeoutError(f"nothing listens on port {port}")


@contextmanager
def milvus_on_a_port(db_file: Path, port: int) -> Iterator[str]:
    """Milvus Lite served on a TCP port: a stand-in for a Milvus server that can be stopped and restarted."""
    server = MilvusLiteServer(str(db_file), address=f"127.0.0.1:{port}")
    assert server.init() and server.start()
    wait_until_listening(port)  # start() returns before the server accepts connections
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_unreachable_milvus_means_not_serving_and_unavailable_then_recovery(tiny_encoder, tmp_path) -> None:
    port, db_file = free_port(), tmp_path / "served.db"
    query = search_pb2.SearchTextRequest(text="a dog")
    with milvus_on_a_port(db_file, port) as uri:
        search_context = running_search(
            tiny_encoder.grpc.address,
            uri,
            milvus_timeout_s=3.0,
            health_interval_s=0.2,
            # Not ./thumbnails, the default beside a Milvus server: the test would write into the checkout.
            thumbnail_dir=str(tmp_path / "thumbnails"),
        )
        search = search_context.__enter__()
    try:
        with search_stub(search.grpc.address) as stub:
            assert search.check_health() is False  # Milvus went away after the service started
            with pytest.raises(grpc.RpcError) as down:
                list(stub.Ingest(requests(folder(2, 2200))))
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE and "Milvus" in down.value.details()
            with milvus_on_a_port(db_file, port):
                wait_for_health(search.grpc.address, health_pb2.HealthCheckResponse.SERVING)
                assert {r.outcome for r in stub.Ingest(requests(folder(2, 2200)))} == {STORED}
                assert len(stub.SearchText(query).hits) == 2
    finally:
        search_context.__exit__(None, None, None)


def test_a_milvus_call_gets_no_longer_than_its_caller_waits(tiny_encoder, tmp_path, caplog) -> None:
    """Every Milvus call took --milvus-timeout-s whatever its caller's deadline: with Milvus stalled, a
    caller who gave up after half a second held a worker thread of the service for the whole timeout."""
    caplog.set_level(logging.INFO, logger="imagesearch.access")
    db_file = tmp_path / "lite.db"
    with (
        running_search(tiny_encoder.grpc.address, db_file, milvus_timeout_s=30.0) as search,
        search_stub(search.grpc.address) as stub,
    ):
        assert {r.outcome for r in stub.Ingest(requests(folder(1, 2350)))} == {STORED}
        lite = lite_process(db_file)
        os.kill(lite, signal.SIGSTOP)  # Milvus stalls: it answers nothing
        try:
            with pytest.raises(grpc.RpcError) as gave_up:
                stub.Stats(search_pb2.StatsRequest(), timeout=2.0)
            for _ in range(1200):  # a bounded poll of the call's access line, written when its handler ends
                ended = [r for r in caplog.records if getattr(r, "fields", {}).get("method") == "Stats"]
                if ended:
                    break
                threading.Event().wait(0.05)
        finally:
            os.kill(lite, signal.SIGCONT)
    assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "Milvus at " in gave_up.value.details() and "did not answer within" in gave_up.value.details()
    [fields] = [line.fields for line in ended]  # type: ignore[attr-defined]
    assert fields["code"] == "DEADLINE_EXCEEDED"
    assert fields["ms"] < 15_000  # its caller's 2 s (and some), not Milvus's 30 s


def test_a_milvus_lite_process_that_is_killed_is_started_again(tiny_encoder, tmp_path) -> None:
    """Before, every call said "cannot reach Milvus" until the search service itself was restarted."""
    db_file, encoder = tmp_path / "lite.db", tiny_encoder.grpc.address
    with running_search(encoder, db_file) as search, search_stub(search.grpc.address) as stub:
        assert {r.outcome for r in stub.Ingest(requests(folder(3, 2300)))} == {STORED}
        os.kill(lite_process(db_file), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        answers = 0
        while answers == 0:  # the call that finds the process gone fails; a later one starts it again
            try:
                answers = stub.Stats(search_pb2.StatsRequest()).count
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert answers == 3
        assert {r.outcome for r in stub.Ingest(requests(folder(4, 2300)))} == {PRESENT, STORED}


def test_a_filter_that_ended_milvus_lite_is_refused_and_it_lives_on(tiny_encoder, tmp_path) -> None:
    """`uri like 5` ended the Milvus Lite process, and with it every other caller's ingest and search; so
    did `1 in [1]`, a division by zero and a contains function with one argument (filter_syntax.py)."""
    db_file, encoder = tmp_path / "lite.db", tiny_encoder.grpc.address
    with running_search(encoder, db_file) as search, search_stub(search.grpc.address) as stub:
        assert {r.outcome for r in stub.Ingest(requests(folder(2, 2400)))} == {STORED}
        lite = lite_process(db_file)
        five = {"p": search_pb2.FilterValue(int_value=5)}
        for filter, params, shown in (
            ("uri like 5", {}, "like 5"),
            ('metadata["album"] like true', {}, "like true"),
            ("uri like uri", {}, "like uri"),
            ("uri like {p}", five, "like 5"),
            ("uri like", {}, "like with nothing after it"),
            ("1 in [1]", {}, "'1 in': in takes a field alone"),
            ("ingested_at / {p} == 1", {"p": search_pb2.FilterValue(int_value=0)}, "divides (/)"),
            ('json_contains(metadata["tags"])', {}, "json_contains(…) with other arguments"),
            # Read only up to the typo, this delete would have deleted both pictures (the count below)
            ('uri like "%pics%" nd ingested_at > 5', {}, "'\"%pics%\" nd' with nothing joining them"),
            ('uri like "%pics%" AND ingested_at > 5', {}, "'AND', which Milvus reads as a field's name"),
            ("ingested_at > 1_000 and ingested_at < 2", {}, "'1 _000' with nothing joining them"),
        ):
            options = search_pb2.SearchOptions(filter=filter, filter_params=params)
            for method, request in (
                (stub.SearchText, search_pb2.SearchTextRequest(text="a dog", options=options)),
                (stub.Delete, search_pb2.DeleteRequest(filter=filter, filter_params=params)),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    method(request)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert shown in refused.value.details()
        assert lite_process(db_file) == lite
        assert stub.Stats(search_pb2.StatsRequest()).count == 2


def test_a_collection_stamped_as_this_services_but_of_another_shape_is_refused(
    tiny_encoder, tmp_path
) -> None:
    """It was opened on the stamp's word: vectors of 256 dimensions were cut to size and reported stored, and
    an L2 index failed every search with Milvus's "metric type not match"."""
    db_file = tmp_path / "foreign.db"
    milvus = MilvusClient(str(db_file))
    stamp = json.dumps({"model": "tiny", "dimension": 512})
    for name, dimension, metric in (("short", 256, "COSINE"), ("l2", 512, "L2"), ("bare", 512, "COSINE")):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=stamp)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        if name != "bare":
            schema.add_field("uri", DataType.VARCHAR, max_length=4096)
            schema.add_field("model", DataType.VARCHAR, max_length=512)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("ingested_at", DataType.INT64)
        milvus.create_collection(name, schema=schema)
        index = MilvusClient.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type=metric)
        milvus.create_index(name, index)
    milvus.close()
    fields = "['id', 'ingested_at', 'metadata', 'model', 'uri', 'vector']"
    refusals = {
        "short": "holds FLOAT_VECTOR vectors of 256 dimensions, not FLOAT_VECTOR ones of 512 (its stamp)",
        "l2": "indexes its vectors by L2, where this service searches by COSINE",
        "bare": f"has the fields ['id', 'vector'], where this service makes {fields}",
    }
    with (
        running_search(tiny_encoder.grpc.address, db_file) as search,
        search_stub(search.grpc.address) as stub,
    ):
        for name, refusal in refusals.items():
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Ingest(requests(folder(1), collection=name)))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert refused.value.details() == f"collection {name!r} {refusal}; use another collection"
    # A default collection that this service cannot use leaves it serving the others.
    with running_search(tiny_encoder.grpc.address, db_file, collection="l2") as search:
        assert search.check_health() is True


def test_a_stalled_milvus_makes_the_service_not_serving_until_it_answers_again(
    tiny_encoder, tmp_path
) -> None:
    db_file = tmp_path / "lite.db"
    with running_search(tiny_encoder.grpc.address, db_file, milvus_timeout_s=1.0) as search:
        lite = lite_process(db_file)
        os.kill(lite, signal.SIGSTOP)
        try:
            assert search.check_health() is False
        finally:
            os.kill(lite, signal.SIGCONT)
        assert search.check_health() is True


def test_a_collection_left_without_an_index_gets_one_when_it_is_opened(tiny_encoder, tmp_path) -> None:
    """A collection whose index Milvus refused (a bad --index-type) was left unsearchable for good: made, but
    never indexed. Now the service indexes it with its own settings when it opens it."""
    db_file, encoder = tmp_path / "half.db", tiny_encoder.grpc.address
    with running_search(encoder, db_file) as search, search_stub(search.grpc.address) as stub:
        assert {r.outcome for r in stub.Ingest(requests(folder(2, 2400)))} == {STORED}
    milvus = MilvusClient(str(db_file))
    milvus.release_collection("images")
    milvus.drop_index("images", "vector")  # what a refused index leaves
    assert milvus.list_indexes("images") == []
    milvus.close()
    with running_search(encoder, db_file) as search, search_stub(search.grpc.address) as stub:
        assert len(stub.SearchText(search_pb2.SearchTextRequest(text="a dog")).hits) == 2
        assert stub.Stats(search_pb2.StatsRequest()).count == 2


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `folder` (root only: skipped elsewhere), unmounted after."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_full_disk_under_milvus_lite_keeps_nothing_it_did_not_report_and_says_so(
    tiny_encoder, tmp_path
) -> None:
    """Lite kept the rows of a write the full disk refused in memory (pymilvus's retries added them again):
    Get showed 384 rows for 192 stored, an ingest again called the others present, and a restart lost them."""
    pictures = folder(400, 3000)
    ids = [hashlib.sha256(image).hexdigest() for _, image in pictures]
    with small_disk(tmp_path / "small", "1m") as disk:
        milvus, thumbnails = disk / "milvus.db", str(tmp_path / "thumbnails")
        with (
            running_search(tiny_encoder.grpc.address, milvus, thumbnail_dir=thumbnails) as server,
            search_stub(server.grpc.address) as stub,
        ):
            answered: list[search_pb2.IngestResponse] = []
            with pytest.raises(grpc.RpcError) as full:
                answered.extend(stub.Ingest(requests(pictures)))
            stored = {result.id for result in answered if result.outcome == STORED}
            kept = {record.id for record in stub.Get(search_pb2.GetRequest(ids=ids)).records}
            counted = stub.Stats(search_pb2.StatsRequest()).count
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            again = list(stub.Ingest(requests(pictures)))
        with (
            running_search(tiny_encoder.grpc.address, milvus, thumbnail_dir=thumbnails) as server,
            search_stub(server.grpc.address) as stub,
        ):
            after_restart = {record.id for record in stub.Get(search_pb2.GetRequest(ids=ids)).records}
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the disk is full" in full.value.details()
    assert 0 < len(stored) < len(pictures) and kept == stored and counted == len(stored)
    assert {result.id for result in again if result.outcome == PRESENT} == stored
    assert {result.id for result in again if result.outcome == STORED} == set(ids) - stored
    assert after_restart == set(ids)
