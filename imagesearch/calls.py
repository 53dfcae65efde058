"""The call being handled: its request id, and its caller, whose deadline and cancel the calls it makes to
other services follow. Both are context variables, set for the handler by the observability interceptor."""

import contextvars
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import grpc

from .headers import REQUEST_ID

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The time kept back from a caller's deadline for the handler's answer to reach it (a share of what is left,
# at most a second): a dependency that takes the rest is named in that answer, where a call ended at the
# caller's own deadline reached it as a bare DEADLINE_EXCEEDED.
_ANSWER_SHARE, _LONGEST_ANSWER_S = 0.25, 1.0


class Caller:
    """Who waits for the call being handled: until when (its `deadline`, in time.monotonic(); inf: none), and
    whether it still waits. The calls the handler makes to other services get no longer than it, and are
    cancelled when it goes (it cancelled its call, or its deadline passed), so that they work for nobody."""

    def __init__(self, deadline: float = math.inf) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._gone = threading.Event()
        self._on_leaving: set[Callable[[], object]] = set()

    def answer_by(self) -> float:
        """When the calls made for this one must end (time.monotonic()): a little before its deadline, so that
        the handler's answer, which says which of them failed, still reaches the caller."""
        kept_back = min(_LONGEST_ANSWER_S, _ANSWER_SHARE * (self.deadline - time.monotonic()))
        return self.deadline - kept_back

    def left(self) -> None:
        """The call has ended, however it ended: whatever still waits for it is cancelled."""
        with self._lock:
            self._gone.set()
            cancels = list(self._on_leaving)
        for cancel in cancels:
            cancel()

    def gone_within(self, seconds: float) -> bool:
        """Waits up to `seconds`, less if the caller goes meanwhile; whether it has gone."""
        return self._gone.wait(seconds)

    @contextmanager
    def awaiting(self, cancel: Callable[[], object]) -> Iterator[None]:
        """Runs `cancel` if the caller goes within this block (at once if it has gone already)."""
        with self._lock:
            gone = self._gone.is_set()
            self._on_leaving.add(cancel)
        try:
            if gone:
                cancel()
            yield
        finally:
            with self._lock:
                self._on_leaving.discard(cancel)


_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")
_WAITING_FOR_EVER = Caller()  # outside any call, it never goes


@contextmanager
def handling(request_id: str, context: grpc.ServicerContext) -> Iterator[None]:
    """Within this block, the call being handled is the one of `context`, with `request_id`."""
    request_token = _request_id.set(request_id)
    caller = Caller(time.monotonic() + context.time_remaining())  # no deadline: grpc says about 9e18 s remain
    if not context.add_callback(caller.left):  # the call has ended already
        caller.left()
    caller_token = _caller.set(caller)
    try:
        yield
    finally:
        _request_id.reset(request_token)
        _caller.reset(caller_token)


def current_request_id() -> str:
    return _request_id.get()


def current_caller() -> Caller:
    """The caller of the call being handled here (outside any call: one that waits for ever)."""
    return _caller.get(_WAITING_FOR_EVER)


def request_id_of(metadata: Mapping[str, str | bytes]) -> str:
    """The caller's request id if it is a safe one, else a fresh one."""
    offered = metadata.get(REQUEST_ID)
    if isinstance(offered, str) and _SAFE_REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex
