"""Scale-out with processes: three encoder replicas behind one search service, one killed mid-ingest."""

import signal
from contextlib import ExitStack

from conftest import encoder_process, encoder_stub, running_search, search_stub
from test_search import STORED, folder, requests

from imagesearch.v1 import encoder_pb2, search_pb2


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
