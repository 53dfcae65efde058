"""Calls to the encoder tier: round robin over its replicas, a deadline on each call, retries with backoff."""

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from imagesearch.calls import Caller, current_caller, current_request_id
from imagesearch.channels import CALLER_OPTIONS, REPLICA_CALLER_OPTIONS
from imagesearch.errors import ServiceError, invalid_argument
from imagesearch.headers import REQUEST_ID, answered_by_a_service, bearer
from imagesearch.tls import WatchedFiles
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from imagesearch.wire import field_header

log = logging.getLogger(__name__)

Response = TypeVar("Response")


_LONGEST_BACKOFF_S = 1.0
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
_IMAGES_FIELD = 1  # EncodeImagesRequest.images
# The encoder names a text it refuses by its place in the call, as every refusal of an item begins.
_REFUSED_TEXT = re.compile(r"texts\[(\d+)\] (.*)", re.DOTALL)


def encode_images_request(images: Sequence[bytes]) -> bytes:
    """EncodeImagesRequest(images=images) as it goes on the wire, written directly: building and serialising
    the message copies every picture twice with the interpreter lock held, about 115 µs for one of 88 KB
    against 10 for this one join."""
    return b"".join(part for image in images for part in (field_header(_IMAGES_FIELD, len(image)), image))


class RefusedByEncoder(ServiceError):
    """INVALID_ARGUMENT from the encoder; `details` is its own message, naming an item as the call did."""

    def __init__(self, target: str, details: str) -> None:
        message = f"encoder at {target}: INVALID_ARGUMENT: {details}"
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)
        self.details = details


@dataclass(frozen=True)
class RejectedImage:
    """An image the encoder would not encode, and why (without its position in the call)."""

    reason: str


def channel_target(target: str) -> str:
    """gRPC's target syntax; a bare list `HOST:PORT,HOST:PORT` of IP addresses becomes `ipv4:...`."""
    if "," in target and not target.startswith(_SCHEMES):
        return "ipv4:" + target
    return target


def _attempt(
    method: "grpc.UnaryUnaryMultiCallable[Any, Response]",
    request: object,
    timeout: float,
    metadata: tuple[tuple[str, str], ...],
    caller: Caller | None,
) -> Response:
    """One try of a call: cancelled if `caller`, where given, goes meanwhile (grpc.FutureCancelledError)."""
    if caller is None:
        return method(request, timeout=timeout, metadata=metadata)
    call = method.future(request, timeout=timeout, metadata=metadata)
    with caller.awaiting(call.cancel):
        return call.result()


class _Channel:
    """A channel to every replica behind the target, round robin, and its methods. Once retired (new TLS files
    came), it is closed when the last call under way on it ends."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None) -> None:
        round_robin = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
        options = [("grpc.service_config", round_robin), *CALLER_OPTIONS, *REPLICA_CALLER_OPTIONS]
        self.channel = (
            grpc.secure_channel(channel_target(target), credentials, options)
            if credentials
            else grpc.insecure_channel(channel_target(target), options)
        )
        self.stub = encoder_pb2_grpc.EncoderServiceStub(self.channel)
        # EncodeImages with its request written by encode_images_request.
        self.encode_images = self.channel.unary_unary(
            "/imagesearch.v1.EncoderService/EncodeImages",
            request_serializer=None,
            response_deserializer=encoder_pb2.EncodeImagesResponse.FromString,
        )
        self._calls, self._retired, self._lock = 0, False, threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self._calls += 1

    def end(self) -> None:
        with self._lock:
            self._calls -= 1
            last = self._retired and self._calls == 0
        if last:
            self.channel.close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            idle = self._calls == 0
        if idle:
            self.channel.close()


class EncoderReplicas:
    """The search service's way to the encoder tier (the SDK's EncoderClient is the user's): every replica
    behind one target, round robin. With `tls`, its files are read again when they change, at each health
    check: new calls go on a new channel, and calls under way end on the old one."""

    def __init__(
        self,
        target: str,
        timeout_s: float,
        token: str = "",
        observe: Callable[[str, str, float], None] = lambda method, code, seconds: None,
        tls: WatchedFiles[grpc.ChannelCredentials] | None = None,
        attempts: int = 5,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.attempts = attempts
        # (method, final status code's name, seconds) of every call, failed or not, its retries included
        self.observe = observe
        self._token = bearer(token)
        self._tls = tls
        self._current = _Channel(target, tls.first if tls else None)
        self._current_lock = threading.Lock()  # a call begins on the current channel, never on a retired one

    def close(self) -> None:
        self._current.channel.close()

    @contextmanager
    def _channel(self) -> Iterator[_Channel]:
        with self._current_lock:
            channel = self._current
            channel.begin()
        try:
            yield channel
        finally:
            channel.end()

    def _renew(self) -> None:
        """A new channel for new calls, once the TLS files have changed (a renewed client certificate)."""
        credentials = self._tls.changed() if self._tls else None
        if credentials is None:
            return
        renewed = _Channel(self.target, credentials)
        with self._current_lock:
            retired, self._current = self._current, renewed
        retired.retire()

    def _call(
        self,
        name: str,
        method_of: "Callable[[_Channel], grpc.UnaryUnaryMultiCallable[Any, Response]]",
        request: object,
        cancellable: bool = False,
    ) -> Response:
        """One call, observed once with its final status and its whole time, retries included; it ends by the
        service's own timeout, or just before its caller's deadline where that comes first (so that the
        caller hears that the encoder did not answer: `Caller.answer_by`). A `cancellable` one (of pictures)
        is also cancelled if its caller goes: the encoder then drops its pictures rather than decode and
        encode them for nobody. The others are short, and blocking calls: a call that can be cancelled is
        a future, which costs grpc a thread of its own per call while none other is under way (a lone text
        query took 0.25 ms more at the median, and up to 7 ms more at the 99th percentile). A call cut for its
        caller is observed as CANCELLED, not as the encoder's slowness."""
        caller, started, code = current_caller(), time.monotonic(), grpc.StatusCode.UNKNOWN
        own_deadline, answer_by = started + self.timeout_s, caller.answer_by()
        try:
            deadline = min(own_deadline, answer_by)
            with self._channel() as channel:
                response = self._retried(method_of(channel), request, deadline, caller, cancellable)
            code = grpc.StatusCode.OK
            return response
        except ServiceError as error:
            by_caller = error.code == grpc.StatusCode.DEADLINE_EXCEEDED and answer_by < own_deadline
            code = grpc.StatusCode.CANCELLED if by_caller else error.code
            raise
        finally:
            self.observe(name, code.name, time.monotonic() - started)

    def _retried(
        self,
        method: "grpc.UnaryUnaryMultiCallable[Any, Response]",
        request: object,
        deadline: float,
        caller: Caller,
        cancellable: bool,
    ) -> Response:
        """One call with a deadline, retried (on another replica, where there are several) on UNAVAILABLE up
        to `attempts` times, and on RESOURCE_EXHAUSTED from an encoder until the deadline: an encoder whose
        queue is full asks to be called later, and several ingest streams at once can keep it full for longer
        than a few retries take, which should slow them down, not fail them. A RESOURCE_EXHAUSTED that no
        encoder said (gRPC's own: a message over the encoder's size limit) fails at once: no retry mends it.
        The retries end when their caller goes.
        """
        metadata = (*self._token, (REQUEST_ID, current_request_id()))
        backoff, attempt = 0.1, 1
        while True:
            remaining = deadline - time.monotonic()
            try:
                return _attempt(
                    method, request, max(remaining, 0.001), metadata, caller if cancellable else None
                )
            except grpc.FutureCancelledError:
                raise self._caller_gone() from None
            except grpc.RpcError as error:
                code = error.code()
                queue_full = code == grpc.StatusCode.RESOURCE_EXHAUSTED and answered_by_a_service(error)
                unreachable = code == grpc.StatusCode.UNAVAILABLE and attempt < self.attempts
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise RefusedByEncoder(self.target, error.details()) from None
                if not (queue_full or unreachable) or remaining <= backoff:
                    raise ServiceError(
                        code, f"encoder at {self.target}: {code.name}: {error.details()}"
                    ) from None
                # A full queue is the encoders' backpressure, as designed: a busy ingest meets it often.
                log.log(
                    logging.INFO if queue_full else logging.WARNING,
                    "encoder call failed (%s, attempt %d); retrying",
                    code.name,
                    attempt,
                )
            if caller.gone_within(backoff * (0.5 + random.random())):
                raise self._caller_gone()
            backoff, attempt = min(backoff * 2, _LONGEST_BACKOFF_S), attempt + 1

    def _caller_gone(self) -> ServiceError:
        return ServiceError(grpc.StatusCode.CANCELLED, f"encoder at {self.target}: its caller has gone")

    def info(self) -> encoder_pb2.GetModelInfoResponse:
        return self._call(
            "GetModelInfo", lambda channel: channel.stub.GetModelInfo, encoder_pb2.GetModelInfoRequest()
        )

    def encode_text(self, text: str) -> tuple[str, np.ndarray]:
        """The model's name and the text's vector (a refusal names it "text", as SearchText's field)."""
        model, [vector] = self.encode_texts([text], ["text"])
        return model, vector

    def encode_texts(self, texts: list[str], names: Sequence[str]) -> tuple[str, list[np.ndarray]]:
        """The model's name and each text's vector, in order, from one call. A text the encoder refuses (one
        without words) is INVALID_ARGUMENT naming it as its caller does (`names`: "parts[2].text")."""
        try:
            response = self._call(
                "EncodeText",
                lambda channel: channel.stub.EncodeText,
                encoder_pb2.EncodeTextRequest(texts=texts),
            )
        except RefusedByEncoder as refusal:
            refused = _REFUSED_TEXT.fullmatch(refusal.details)
            if refused is None or int(refused[1]) >= len(names):
                raise
            raise invalid_argument(f"{names[int(refused[1])]} {refused[2]}") from None
        return response.model, [
            np.asarray(result.vector.values, dtype=np.float32) for result in response.results
        ]

    def encode_images(self, images: list[bytes]) -> tuple[str, list[np.ndarray | RejectedImage]]:
        """The model's name and, for each image in order, its vector or the reason it has none."""
        response = self._call(
            "EncodeImages",
            lambda channel: channel.encode_images,
            encode_images_request(images),
            cancellable=True,
        )
        return response.model, [
            np.asarray(result.vector.values, dtype=np.float32)
            if result.WhichOneof("outcome") == "vector"
            # `reason` leaves out "images[i]: ", an index into this batch (older encoders send only `error`)
            else RejectedImage(result.reason or result.error)
            for result in response.results
        ]

    def serving_model(self, timeout_s: float) -> str | None:
        """The model a replica says it serves, within `timeout_s` (waiting for a reconnect, if one is under
        way), on a new channel if the TLS files have changed; None when none answers. Two questions go at
        once, which round robin sends to two replicas where there are two: one frozen replica (found only
        when its pings go unanswered, within about 8 s) does not make the service NOT_SERVING while another
        answers."""
        self._renew()
        with self._channel() as channel:
            asked = [
                channel.stub.GetModelInfo.future(
                    encoder_pb2.GetModelInfoRequest(),
                    timeout=timeout_s,
                    wait_for_ready=True,
                    metadata=self._token,
                )
                for _ in range(2)
            ]
            ended = threading.Semaphore(0)
            for question in asked:
                question.add_done_callback(lambda _: ended.release())
            for _ in asked:
                ended.acquire()
                if any(question.done() and question.code() == grpc.StatusCode.OK for question in asked):
                    break
            for question in asked:
                question.cancel()
            answers = [question.result() for question in asked if question.code() == grpc.StatusCode.OK]
            return answers[0].model if answers else None
