"""The EncoderService RPCs: each checks its request, hands it to the runtime, and maps the outcome."""

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import numpy as np

from imagesearch.errors import ServiceError, invalid_argument
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from imagesearch.wire import field_header

from .batcher import BatcherClosed, QueueFull
from .config import EncoderConfig
from .images import RejectedImage
from .runtime import EncoderRuntime, NoWords
from .workers import WorkerDied

_VALUES_FIELD = 1  # Vector.values


def vector_message(values: np.ndarray) -> encoder_pb2.Vector:
    """The message for `values`, parsed from its wire form: proto3 sends a `repeated float` packed, as raw
    little-endian float32s, so no Python float is made per element (6 times faster than from a list)."""
    payload = values.astype("<f4", copy=False).tobytes()
    return encoder_pb2.Vector.FromString(field_header(_VALUES_FIELD, len(payload)) + payload)


@contextmanager
def _batching_errors() -> Iterator[None]:
    try:
        yield
    except QueueFull as error:
        raise ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"{error}; retry later or on another replica"
        ) from None
    except BatcherClosed as error:
        raise ServiceError(grpc.StatusCode.UNAVAILABLE, str(error)) from None
    except WorkerDied as error:  # tokenising: one text cannot be told from the others, so the call fails
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE, f"tokenising the texts failed: {error}; retry"
        ) from None


def _image_result(index: int, outcome: np.ndarray | RejectedImage) -> encoder_pb2.ImageResult:
    if isinstance(outcome, RejectedImage):
        return encoder_pb2.ImageResult(error=f"images[{index}]: {outcome.reason}", reason=outcome.reason)
    return encoder_pb2.ImageResult(vector=vector_message(outcome))


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    """Answers UNAVAILABLE until `runtime` is set, once the model is loaded and warm."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self.runtime: EncoderRuntime | None = None

    def _ready(self) -> EncoderRuntime:
        if self.runtime is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry shortly")
        return self.runtime

    def _check_count(self, what: str, count: int) -> None:
        if count == 0:
            raise invalid_argument(f"{what} is empty: send at least one")
        if count > self.config.max_items_per_request:
            raise invalid_argument(
                f"{count} {what} in one call is over the limit of {self.config.max_items_per_request}"
            )

    def EncodeText(
        self, request: encoder_pb2.EncodeTextRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.EncodeTextResponse:
        runtime = self._ready()
        self._check_count("texts", len(request.texts))
        for index, text in enumerate(request.texts):
            if not text.strip():
                raise invalid_argument(f"texts[{index}] is empty")
        with _batching_errors():
            try:
                results = runtime.encode_texts(list(request.texts))
            except NoWords as error:
                raise invalid_argument(str(error)) from None
        return encoder_pb2.EncodeTextResponse(
            model=runtime.model.name,
            results=[
                encoder_pb2.TextResult(vector=vector_message(result.vector), truncated=result.truncated)
                for result in results
            ],
        )

    def EncodeImages(
        self, request: encoder_pb2.EncodeImagesRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.EncodeImagesResponse:
        runtime = self._ready()
        self._check_count("images", len(request.images))
        with _batching_errors():
            outcomes = runtime.encode_images(request.images, context.add_callback)
        return encoder_pb2.EncodeImagesResponse(
            model=runtime.model.name,
            results=[_image_result(index, outcome) for index, outcome in enumerate(outcomes)],
        )

    def GetModelInfo(
        self, request: encoder_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.GetModelInfoResponse:
        runtime = self._ready()
        model, config = runtime.model, self.config
        images, texts = runtime.images, runtime.texts
        return encoder_pb2.GetModelInfoResponse(
            model=model.name,
            dimension=model.dimension,
            device=str(model.device),
            dtype=str(model.dtype).removeprefix("torch."),
            max_batch_size=config.max_batch_size,
            max_batch_delay_ms=config.max_batch_delay_ms,
            max_queue_size=config.max_queue_size,
            max_items_per_request=config.max_items_per_request,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
            image_resolution=model.image_resolution,
            context_length=model.context_length,
            image_forward_passes=images.forward_passes,
            images_encoded=images.items_processed,
            text_forward_passes=texts.forward_passes,
            texts_encoded=texts.items_processed,
            image_queue_depth=images.queue_depth(),
            text_queue_depth=texts.queue_depth(),
            decode_workers=runtime.workers.size,
            jpeg_decoding="device" if runtime.jpegs is not None else "processes",
            image_cuda_graphs=len(runtime.image_forward.captured_shapes),
            text_cuda_graphs=len(runtime.text_forward.captured_shapes),
            text_cache_size=runtime.cache.capacity,
            text_cache_hits=runtime.cache.hits,
            image_items_running=images.items_running,
            text_items_running=texts.items_running,
        )
