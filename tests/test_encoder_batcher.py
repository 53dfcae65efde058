"""The dynamic batcher alone: no gRPC, no model; its forward pass is a function the test holds or lets go."""

import threading
from collections.abc import Iterator, Sequence

import pytest

from encoder_service.batcher import BatcherClosed, DynamicBatcher, QueueFull

AN_HOUR = 3600.0  # a batch delay that a test would notice: pytest's timeout ends it long before


class Pass:
    """A forward pass that records its batches, multiplies by 10, fails on "bad", and, when held, waits in
    its first batch until the test lets it go."""

    def __init__(self, held: bool = False) -> None:
        self.batches: list[list] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()

    def __call__(self, items: Sequence) -> list:
        self.started.set()
        self.release.wait()
        self.batches.append(list(items))
        if "bad" in items:
            raise ValueError("a bad item")
        return [item * 10 for item in items]


@pytest.fixture
def run() -> Pass:
    return Pass()


@pytest.fixture
def held() -> Pass:
    return Pass(held=True)


def batcher_for(
    run: Pass, max_batch_size: int = 8, max_queue_size: int = 64, max_delay_s: float = AN_HOUR
) -> Iterator[DynamicBatcher]:
    batcher: DynamicBatcher = DynamicBatcher("test", run, max_batch_size, max_delay_s, max_queue_size)
    try:
        yield batcher
    finally:
        run.release.set()
        batcher.close()


@pytest.fixture
def batcher(run: Pass) -> Iterator[DynamicBatcher]:
    yield from batcher_for(run)


def test_a_lone_caller_never_waits_whatever_the_delay(batcher: DynamicBatcher, run: Pass) -> None:
    for call in range(3):
        with batcher.expect(2) as arrival:
            future = arrival.submit([call, call])
        assert future.result(timeout=60) == [10 * call, 10 * call]
    assert run.batches == [[0, 0], [1, 1], [2, 2]]


# How long a test watches for a forward pass that must not start: the worker, woken by a submit, starts one
# within milliseconds when it does not wait.
NO_PASS_S = 0.5


def test_requests_on_their_way_are_merged_into_one_forward_pass(batcher: DynamicBatcher, run: Pass) -> None:
    arrivals = [batcher.expect(1) for _ in range(3)]
    first = arrivals[0].submit([0])
    assert not run.started.wait(NO_PASS_S)  # the batch waits for the two announced
    futures = [first, *(arrival.submit([index]) for index, arrival in enumerate(arrivals) if index)]
    assert [future.result(timeout=60) for future in futures] == [[0], [10], [20]]
    assert run.batches == [[0, 1, 2]]


def test_callers_just_answered_are_waited_for_as_they_come_back(batcher: DynamicBatcher, run: Pass) -> None:
    arrivals = [batcher.expect(1) for _ in range(3)]
    answered = [arrival.submit([index]) for index, arrival in enumerate(arrivals)]
    assert [future.result(timeout=60) for future in answered] == [[0], [10], [20]]
    # The three callers send again at once, well within the delay (an hour): one pass, not a lone one first.
    again = [batcher.submit([index]) for index in (3, 4, 5)]
    assert [future.result(timeout=60) for future in again] == [[30], [40], [50]]
    assert run.batches == [[0, 1, 2], [3, 4, 5]]


def test_a_request_that_never_submits_does_not_hold_the_batch(batcher: DynamicBatcher, run: Pass) -> None:
    staying = batcher.expect(1)
    with batcher.expect(1):  # announced, then given up (say its every image was rejected)
        future = staying.submit([1])
        assert not run.started.wait(NO_PASS_S)  # the batch waits for it, until it gives up
    assert future.result(timeout=60) == [10]


def test_items_arriving_while_the_model_is_busy_form_the_next_batch(held: Pass) -> None:
    # The first caller never comes back: the next pass waits for it only the (short) delay.
    for batcher in batcher_for(held, max_delay_s=0.05):
        first = batcher.submit([1])
        held.started.wait()
        later = [batcher.submit([index]) for index in (2, 3, 4)]
        held.release.set()
        assert first.result(timeout=60) == [10]
        assert [future.result(timeout=60) for future in later] == [[20], [30], [40]]
    assert held.batches == [[1], [2, 3, 4]]


def test_a_request_larger_than_a_batch_spans_passes_and_keeps_its_order(run: Pass) -> None:
    for batcher in batcher_for(run, max_batch_size=2):
        assert batcher.submit([1, 2, 3, 4, 5]).result(timeout=60) == [10, 20, 30, 40, 50]
    assert run.batches == [[1, 2], [3, 4], [5]]


def test_a_failed_pass_fails_its_requests_and_the_next_pass_runs(batcher: DynamicBatcher) -> None:
    with pytest.raises(ValueError, match="a bad item"):
        batcher.submit(["bad"]).result(timeout=60)
    assert batcher.submit([2]).result(timeout=60) == [20]
    assert (batcher.forward_passes, batcher.items_processed, batcher.items_running) == (1, 1, 0)


def test_a_request_that_does_not_fit_the_queue_is_refused_at_once(held: Pass) -> None:
    for batcher in batcher_for(held, max_batch_size=2, max_queue_size=4):
        running = batcher.submit([1, 2])
        held.started.wait()
        assert batcher.items_running == 2
        queued = batcher.submit([3, 4, 5, 6])
        with pytest.raises(QueueFull, match="the test queue holds 4 of 4 items; 1 more do not fit"):
            batcher.submit([7])
        held.release.set()
        assert running.result(timeout=60) == [10, 20]
        assert queued.result(timeout=60) == [30, 40, 50, 60]


def test_a_request_being_prepared_holds_its_room_and_one_that_cannot_fit_is_refused_before(
    held: Pass,
) -> None:
    """Refused when announced, not once its pictures are decoded: that work would be thrown away."""
    for batcher in batcher_for(held, max_batch_size=2, max_queue_size=4):
        running = batcher.submit([1, 2])
        held.started.wait()
        with batcher.expect(3) as preparing:
            assert batcher.queue_depth() == 3  # as the refusals count it: it read 0 while calls were refused
            with pytest.raises(QueueFull, match="the test queue holds 3 of 4 items; 2 more do not fit"):
                batcher.expect(2)
            with pytest.raises(QueueFull, match="the test queue holds 3 of 4 items; 2 more do not fit"):
                batcher.submit([8, 9])
            prepared = preparing.submit([3, 4])  # one of its three was rejected while it was prepared
        with batcher.expect(2) as second:  # the room of the item that was rejected is given back
            later = second.submit([5, 6])
        held.release.set()
        assert [future.result(timeout=60) for future in (running, prepared, later)] == [
            [10, 20],
            [30, 40],
            [50, 60],
        ]


def test_close_runs_what_is_queued_then_refuses_new_requests(held: Pass) -> None:
    batcher: DynamicBatcher = DynamicBatcher("test", held, 8, AN_HOUR, 1_000_000)
    running = batcher.submit([1])
    held.started.wait()
    queued = batcher.submit([2, 3])
    closing = threading.Thread(target=batcher.close)
    closing.start()
    probes = []  # submitted until the batcher says it is closing: each of them must still be answered
    while True:
        try:
            probes.append(batcher.submit([9]))
        except BatcherClosed as closed:
            assert str(closed) == "the test batcher is shutting down"
            break
    held.release.set()
    closing.join()
    assert running.result(timeout=0) == [10]
    assert queued.result(timeout=0) == [20, 30]
    assert all(probe.result(timeout=0) == [90] for probe in probes)
