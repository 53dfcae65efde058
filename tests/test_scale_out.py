"""Scale-out: three encoder replicas behind one search service, one killed mid-ingest; a replica added to DNS
while the search service's calls go on, none failing as the servers end their connections."""

import itertools
import signal
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import grpc
import pytest
from conftest import encoder_process, encoder_stub, running_encoder, running_search, search_stub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_search import STORED, folder, requests

from encoder_service.server import EncoderServer
from imagesearch.channels import CALLER_OPTIONS, REPLICA_CALLER_OPTIONS
from imagesearch.errors import ServiceError
from imagesearch.serving import NOT_SERVING, SERVING
from imagesearch.v1 import encoder_pb2, search_pb2
from search_service.encoder_replicas import EncoderReplicas


def images_encoded(address: str) -> int:
    with encoder_stub(address) as stub:
        return stub.GetModelInfo(encoder_pb2.GetModelInfoRequest()).images_encoded


def test_ingest_completes_when_one_of_three_replicas_is_killed(tiny_path, tmp_path) -> None:
    pictures = folder(300)
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(encoder_process(tiny_path, "--max-items-per-request", "8")) for _ in range(3)
        ]
        target = ",".join(address for _, address in replicas)
        search = stack.enter_context(running_search(target, tmp_path / "milvus.db"))
        stub = stack.enter_context(search_stub(search.grpc.address))
        results: list[search_pb2.IngestResponse] = []
        traffic_before_kill: list[int] = []
        for result in stub.Ingest(requests(pictures)):
            results.append(result)
            if len(results) == 80:
                traffic_before_kill = [images_encoded(address) for _, address in replicas]
                replicas[2][0].send_signal(signal.SIGKILL)
        survivors = [images_encoded(address) for _, address in replicas[:2]]
        count = stub.Stats(search_pb2.StatsRequest()).count
    assert min(traffic_before_kill) > 0, traffic_before_kill
    assert all(after > before for after, before in zip(survivors, traffic_before_kill, strict=False))
    assert [r.outcome for r in results] == [STORED] * 300
    assert len({r.id for r in results}) == 300 and count == 300


def test_a_frozen_replica_is_left_out_and_the_service_stays_serving(tiny_path, tmp_path) -> None:
    """A replica that stops answering but keeps its connections open (a frozen process, a partition): each
    search that round robin sent it waited for its whole deadline (a frozen replica of two held every caller
    for 30 s), and a health check that asked it made the service NOT_SERVING while the other answered. Its
    connections are now pinged, and dropped when a ping goes unanswered."""
    with ExitStack() as stack:
        replicas = [stack.enter_context(encoder_process(tiny_path)) for _ in range(2)]
        target = ",".join(address for _, address in replicas)
        settings = {"encoder_timeout_s": 600.0, "health_interval_s": 3600.0}  # health: only as the test asks
        search = stack.enter_context(running_search(target, tmp_path / "milvus.db", **settings))
        stub = stack.enter_context(search_stub(search.grpc.address))
        assert [r.outcome for r in stub.Ingest(requests(folder(2)))] == [STORED] * 2
        frozen = replicas[1][0]
        frozen.send_signal(signal.SIGSTOP)
        stack.callback(frozen.send_signal, signal.SIGCONT)  # before it is stopped
        health = [search.check_health() for _ in range(4)]
        query = search_pb2.SearchTextRequest(text="a", options=search_pb2.SearchOptions(top_k=5))
        found = [len(stub.SearchText(query, timeout=30).hits) for _ in range(6)]
    assert health == [True] * 4
    assert found == [2] * 6


def test_every_service_keeps_a_connection_that_is_pinged_as_the_search_service_pings_its_encoders(
    tiny_encoder,
) -> None:
    """gRPC's default ends a connection pinged more often than every 5 minutes without data (GOAWAY
    "too_many_pings", after two strikes): every idle encoder connection was dropped within 12 s. Pinged here
    every 1.5 s, no call on it, the connection must stay READY past the three pings that ended it."""
    options = {**dict(REPLICA_CALLER_OPTIONS), "grpc.keepalive_time_ms": 1500}
    with grpc.insecure_channel(tiny_encoder.grpc.address, list(options.items())) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        left_ready = threading.Event()
        channel.subscribe(lambda state: left_ready.set() if state != grpc.ChannelConnectivity.READY else None)
        assert not left_ready.wait(8)  # about five pings, unanswered by any GOAWAY


# The encoders below end each connection after this long (by default 30 s), so that a test sees several end.
AGE_S = 0.3
# DNS: the record type A, the class IN, and a pointer to the question's name
_A, _IN, _NAME_OF_THE_QUESTION = 1, 1, 0xC00C


class _Answers(socketserver.BaseRequestHandler):
    """Answers a DNS query with an A record, TTL 0, for each of the server's addresses (none for other types:
    the AAAA query that comes with each A query)."""

    server: "DnsServer"

    def handle(self) -> None:
        query, reply = self.request
        end = query.index(0, 12) + 5  # the question: its name, then its type and class
        (record_type,) = struct.unpack(">H", query[end - 4 : end - 2])
        addresses = [*self.server.addresses] if record_type == _A else []
        header = struct.pack(">HHHHH", 0x8180, 1, len(addresses), 0, 0)  # an answer, no error, 1 question
        records = b"".join(
            struct.pack(">HHHIH", _NAME_OF_THE_QUESTION, _A, _IN, 0, 4) + socket.inet_aton(address)
            for address in addresses
        )
        reply.sendto(query[:2] + header + query[12:end] + records, self.client_address)


class DnsServer(socketserver.UDPServer):
    """A DNS server on a loopback UDP port that answers any name with `addresses`, as a test changes them."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.addresses = addresses
        self.port: int = self.server_address[1]


@contextmanager
def dns_server(addresses: list[str]) -> Iterator[DnsServer]:
    with DnsServer(addresses) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        threading.Event().wait(0.05)  # a bounded poll of a condition, not a guess at a duration


def wait_for_connection_end(states: list[grpc.ChannelConnectivity], ends: int) -> None:
    """Waits until a channel, whose connectivity `states` a subscription collects, has left READY `ends` times
    (a server's GOAWAY turns it IDLE until the next call)."""

    def ended() -> int:
        ready = grpc.ChannelConnectivity.READY
        return sum(before == ready and after != ready for before, after in itertools.pairwise(states))

    wait_until(lambda: ended() >= ends, 20.0, f"the server ended connection {ends}")


def texts_encoded(encoder: EncoderServer) -> int:
    assert encoder.grpc is not None
    with encoder_stub(encoder.grpc.address) as stub:
        return stub.GetModelInfo(encoder_pb2.GetModelInfoRequest()).texts_encoded


@contextmanager
def calls_without_pause(replicas: EncoderReplicas, callers: int = 3) -> Iterator[list[ServiceError]]:
    """Callers that encode a text through `replicas` again and again until the block ends; the errors they
    got, once it has."""
    failures: list[ServiceError] = []
    done = threading.Event()

    def call() -> None:
        while not done.is_set():
            try:
                replicas.encode_text("a red circle")
            except ServiceError as error:
                failures.append(error)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        yield failures
    finally:
        done.set()
        for thread in threads:
            thread.join()


@pytest.fixture(scope="module")
def short_lived_connections(tiny_path) -> Iterator[tuple[EncoderServer, EncoderServer]]:
    """Two encoders on one port of two loopback addresses, both ending each connection after AGE_S."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(
                running_encoder(tiny_path, host=host, port=port, decode_workers=1, max_connection_age_s=AGE_S)
            )
            for host in ["127.0.0.2", "127.0.0.3"]
        )
        yield first, second


def test_a_replica_added_to_dns_gets_calls_and_no_call_fails_as_connections_end(
    short_lived_connections,
) -> None:
    first, second = short_lived_connections
    assert first.grpc is not None
    port = first.grpc.port
    addresses = ["127.0.0.2"]
    with dns_server(addresses) as dns:
        # One try per call: a call that failed as its connection ended is not retried here, so only gRPC's
        # own handling of the server's GOAWAY can keep it from failing.
        replicas = EncoderReplicas(f"dns://127.0.0.1:{dns.port}/encoder.test:{port}", 20.0, attempts=1)
        try:
            replicas.encode_text("a red circle")  # the name is looked up while DNS holds the first alone
            addresses.append("127.0.0.3")
            with calls_without_pause(replicas) as failures:
                wait_until(lambda: texts_encoded(second) > 0, 20.0, "the replica added to DNS got a call")
        finally:
            replicas.close()
    assert failures == []
    assert texts_encoded(first) > 0


def test_a_stream_outlives_the_connection_it_started_on(short_lived_connections) -> None:
    encoder = short_lived_connections[0]
    assert encoder.grpc is not None
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(encoder.grpc.address, CALLER_OPTIONS) as channel:
        channel.subscribe(states.append, try_to_connect=True)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30.0)
        assert next(watch).status == SERVING
        for ends in range(1, 6):
            wait_for_connection_end(states, ends)
            # A new call opens the channel's next connection, for the server to end in its turn.
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5.0).status == SERVING
        encoder.grpc.set_serving(False)
        try:
            assert next(watch).status == NOT_SERVING
        finally:
            encoder.grpc.set_serving(True)
            watch.cancel()
