"""The SDK's exception types: every failure carries the gRPC status and the words of whoever refused."""

from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:  # the results import this module for `refused`
    from .models import IngestSummary


class ImageSearchError(Exception):
    """A call that failed, or a request the SDK refused before sending it (then `target` is empty).

    `reached` is False when no such service answered: nothing listens at `target`, or the network is down
    (`code` is UNAVAILABLE or DEADLINE_EXCEEDED, and the message says whom the SDK could not reach, or
    that the service went away during a stream), or
    another server is there (UNIMPLEMENTED, and the message says so).
    `went_away` is True when the service had answered (an ingest asks its limits just before its stream) and
    then could no longer be reached during the stream: it stopped, or the network between went down.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        target: str = "",
        service: str = "",
        reached: bool = True,
        went_away: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target
        self.service = service
        self.reached = reached
        self.went_away = went_away

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class IngestInterrupted(ImageSearchError):
    """An ingestion that ended early; `summary` holds every result received before it did."""

    def __init__(self, error: ImageSearchError, summary: "IngestSummary") -> None:
        super().__init__(
            error.code, error.message, error.target, error.service, error.reached, error.went_away
        )
        self.summary = summary


def refused(message: str) -> ImageSearchError:
    """A request the SDK will not send, as the service would have refused it."""
    return ImageSearchError(grpc.StatusCode.INVALID_ARGUMENT, message)
