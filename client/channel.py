"""What every client shares about reaching a service: the channel, each call's metadata, and its errors."""

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import grpc

from imagesearch.channels import CALLER_OPTIONS
from imagesearch.defaults import LONGEST_SECONDS
from imagesearch.headers import REQUEST_ID, answered_by_a_service, bearer, unsendable

from .errors import ImageSearchError, refused
from .models import is_number

# Calls are retried by gRPC itself when no server answered or a service said UNAVAILABLE (its encoder or
# Milvus is restarting, say): what can succeed on retry. Ingest streams are not: under a retry policy, a
# stream whose service died before its first answer never ended (grpcio 1.85; grpc/grpc#41036), and the
# method named alone takes precedence over its service's entry.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {"name": [{"service": "imagesearch.v1.SearchService", "method": "Ingest"}]},
            {
                "name": [
                    {"service": "imagesearch.v1.SearchService"},
                    {"service": "imagesearch.v1.EncoderService"},
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            },
        ]
    }
)
_CHANNEL_OPTIONS = [("grpc.service_config", _SERVICE_CONFIG), *CALLER_OPTIONS]
# Each call's deadline (an ingest's longest silence) unless the caller gives one: longer than the search
# service's own deadline on an encoder call (60 s), so that its error naming what failed comes back, not the
# caller's own DEADLINE_EXCEEDED at the same moment.
DEFAULT_TIMEOUT_S = 120.0
_chosen_request_id: ContextVar[str | None] = ContextVar("chosen_request_id", default=None)


@contextmanager
def request_id(value: str) -> Iterator[None]:
    """Every call that the SDK's clients, blocking or asyncio, make in this block (in this thread, or this
    task and what it awaits) sends `value` as its `x-request-id`, which both services write in their log
    lines of the call; outside one, each call sends a fresh id. A service keeps only an id of 1-128 letters,
    digits and `._:-`."""
    token = _chosen_request_id.set(value)
    try:
        yield
    finally:
        _chosen_request_id.reset(token)


class Connection:
    """A channel to one service, made with `api` (grpc, or grpc.aio for the asyncio clients)."""

    def __init__(
        self,
        api: ModuleType,
        service: str,
        target: str,
        timeout: float | None,
        credentials: grpc.ChannelCredentials | None,
        token: str | None,
    ) -> None:
        if timeout is not None and not (is_number(timeout) and 0 < timeout <= LONGEST_SECONDS):
            raise refused(
                f"timeout = {timeout!r} is not a number of seconds above 0, at most {LONGEST_SECONDS:g} (or "
                "None: no deadline)"
            )
        if not isinstance(target, str) or not target.strip():
            raise refused(f"target = {target!r} is not the address of a service (host:port)")
        if token is not None and not isinstance(token, str):
            raise refused(f"token is {type(token).__name__}, not text")  # never shown: a secret
        if token and (why := unsendable(token, "token")):
            raise refused(why)
        self.service = service
        self.target = target
        self.timeout = timeout
        self._token = token or ""
        self._closed = False
        self.channel: Any = self._open(api, credentials)

    def _open(self, api: ModuleType, credentials: grpc.ChannelCredentials | None) -> Any:
        """The channel to `target`, once the arguments are known to be good."""
        return (
            api.secure_channel(self.target, credentials, _CHANNEL_OPTIONS)
            if credentials
            else api.insecure_channel(self.target, _CHANNEL_OPTIONS)
        )

    def close(self) -> Any:
        """Closes the channel (awaitable for grpc.aio); every later call raises ImageSearchError."""
        self._closed = True
        return self.channel.close()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """A call's metadata: the token, and a request id that the services log and pass on (the one chosen
        with `request_id`, or a fresh one). Every call asks for it first, so a closed client is refused here
        (grpc's own refusal is a ValueError)."""
        if self._closed:
            raise ImageSearchError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this client of the {self.service} at {self.target} is closed: make a new one",
            )
        return (*bearer(self._token), (REQUEST_ID, _chosen_request_id.get() or uuid.uuid4().hex))

    @property
    def closed(self) -> bool:
        return self._closed

    def closed_under_a_call(self) -> ImageSearchError:
        """What a call under way gets when its client is closed: gRPC cancels it."""
        message = f"this client of the {self.service} at {self.target} was closed during the call"
        return ImageSearchError(grpc.StatusCode.CANCELLED, message, self.target, self.service)

    def error(self, error: grpc.RpcError, answered: bool = False) -> ImageSearchError:
        """The failure as the SDK reports it; a service that never answered is named as unreachable, and one
        that went away after it had `answered` (an ingest's GetLimits, asked just before its stream) as gone:
        it was "cannot reach", which sent its user looking for a wrong address instead of a crash."""
        code: grpc.StatusCode = error.code()
        message: str = error.details() or ""
        reached = answered_by_a_service(error)
        went_away = not reached and answered and code == grpc.StatusCode.UNAVAILABLE
        if code == grpc.StatusCode.CANCELLED and self._closed:
            return self.closed_under_a_call()
        if went_away:
            message = f"the {self.service} at {self.target} went away during the stream: {message}"
        elif not reached and code == grpc.StatusCode.UNAVAILABLE:
            message = f"cannot reach the {self.service} at {self.target}: {message}"
        elif not reached and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"the {self.service} at {self.target} did not answer within {self.timeout} s"
        elif not reached and code == grpc.StatusCode.UNIMPLEMENTED:
            message = (
                f"the server at {self.target} does not serve this call ({message}): "
                f"is it the {self.service}, and as new as this client?"
            )
        return ImageSearchError(code, message, self.target, self.service, reached, went_away)

    def older_service(self, error: ImageSearchError, ignored: str) -> ImageSearchError | None:
        """What to raise for `error` of the GetLimits asked before a request with a field, `ignored`, that the
        first version's search service would not read (proto3 drops the fields it does not know): None where
        the service answered it, whatever it said (GetLimits asks the encoder, which may be down): a service
        that has GetLimits reads the field."""
        if error.reached:
            return None
        if error.code != grpc.StatusCode.UNIMPLEMENTED:
            return error
        message = (
            f"the server at {self.target} does not serve GetLimits: if it is the first version's "
            f"{self.service}, it would ignore {ignored}: upgrade it (or use the client of its version)"
        )
        return ImageSearchError(
            grpc.StatusCode.FAILED_PRECONDITION, message, self.target, self.service, reached=False
        )

    def silence(self) -> ImageSearchError:
        """An ingest stream the SDK cancelled: the service owed answers and gave none for `timeout` s."""
        message = (
            f"the {self.service} at {self.target} answered nothing for {self.timeout} s while it owed answers"
        )
        return ImageSearchError(grpc.StatusCode.DEADLINE_EXCEEDED, message, self.target, self.service)
