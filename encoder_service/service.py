"""The EncoderService RPCs: request checks, parallel image decoding, and the two batchers."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
import torch

from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc

from .batcher import BatcherClosed, DynamicBatcher, QueueFull
from .config import EncoderConfig
from .images import ImageLimits, ImageRejected, decode_image, smallest_useful_side
from .metrics import EncoderMetrics
from .model import ClipModel


@dataclass
class _Runtime:
    """What exists only once the model is loaded."""

    model: ClipModel
    images: DynamicBatcher[torch.Tensor, np.ndarray]
    texts: DynamicBatcher[torch.Tensor, np.ndarray]


def _vector(values: np.ndarray) -> encoder_pb2.Vector:
    return encoder_pb2.Vector(values=values.tolist())


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, config: EncoderConfig, metrics: EncoderMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.runtime: _Runtime | None = None
        self._limits = ImageLimits(config.max_image_bytes, config.max_image_pixels)
        self._decoders = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="decode")

    def load(self) -> None:
        """Loads the model, starts the batchers, and runs one pass of each tower so the first call is warm."""
        model = ClipModel(
            self.config.model, self.config.device, self.config.model_cache, self.config.precision
        )

        def batcher(name: str, encode: Callable[[torch.Tensor], np.ndarray]) -> DynamicBatcher:
            batcher: DynamicBatcher = DynamicBatcher(
                name,
                lambda items: list(encode(torch.stack(items))),
                self.config.max_batch_size,
                self.config.max_batch_delay_ms / 1000,
                self.config.max_queue_size,
                self.metrics.batch_observer(name),
            )
            self.metrics.queue_depth.labels(name).set_function(batcher.queue_depth)
            return batcher

        model.encode_images(torch.zeros(1, 3, model.image_resolution, model.image_resolution))
        model.encode_texts(model.tokenize(["warm up"]).tokens)
        images, texts = batcher("image", model.encode_images), batcher("text", model.encode_texts)
        self.runtime = _Runtime(model, images, texts)
        self.metrics.model_loaded.set(1)

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.images.close()
            self.runtime.texts.close()
        self._decoders.shutdown()

    def _ready(self, context: grpc.ServicerContext) -> _Runtime:
        if self.runtime is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry shortly")
        return self.runtime

    def _check_count(self, what: str, count: int, context: grpc.ServicerContext) -> None:
        if count == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is empty: send at least one")
        if count > self.config.max_items_per_request:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{count} {what} in one call is over the limit of {self.config.max_items_per_request}",
            )

    def _run(self, batcher: DynamicBatcher, items: list[torch.Tensor], context: grpc.ServicerContext) -> list:
        try:
            return batcher.submit(items).result()
        except QueueFull as error:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{error}; retry later or on another replica")
        except BatcherClosed as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))

    def EncodeText(
        self, request: encoder_pb2.EncodeTextRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.EncodeTextResponse:
        runtime = self._ready(context)
        self._check_count("texts", len(request.texts), context)
        for index, text in enumerate(request.texts):
            if not text.strip():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"texts[{index}] is empty")
        limit = self.config.max_text_chars
        tokenized = runtime.model.tokenize([text[:limit] for text in request.texts])
        vectors = self._run(runtime.texts, list(tokenized.tokens), context)
        return encoder_pb2.EncodeTextResponse(
            model=runtime.model.name,
            results=[
                encoder_pb2.TextResult(vector=_vector(vector), truncated=cut or len(text) > limit)
                for vector, cut, text in zip(vectors, tokenized.truncated, request.texts, strict=True)
            ],
        )

    def _preprocess(self, data: bytes, model: ClipModel) -> torch.Tensor | str:
        try:
            smallest_side = smallest_useful_side(model.image_resolution)
            return model.preprocess(decode_image(data, self._limits, smallest_side))
        except ImageRejected as error:
            return str(error)

    def EncodeImages(
        self, request: encoder_pb2.EncodeImagesRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.EncodeImagesResponse:
        runtime = self._ready(context)
        self._check_count("images", len(request.images), context)
        decoded = list(self._decoders.map(lambda data: self._preprocess(data, runtime.model), request.images))
        good = [pixels for pixels in decoded if isinstance(pixels, torch.Tensor)]
        vectors = iter(self._run(runtime.images, good, context))
        results = [
            encoder_pb2.ImageResult(vector=_vector(next(vectors)))
            if isinstance(pixels, torch.Tensor)
            else encoder_pb2.ImageResult(error=f"images[{index}]: {pixels}")
            for index, pixels in enumerate(decoded)
        ]
        return encoder_pb2.EncodeImagesResponse(model=runtime.model.name, results=results)

    def GetModelInfo(
        self, request: encoder_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> encoder_pb2.GetModelInfoResponse:
        runtime = self._ready(context)
        model, config = runtime.model, self.config
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
            image_forward_passes=runtime.images.forward_passes,
            images_encoded=runtime.images.items_processed,
            text_forward_passes=runtime.texts.forward_passes,
            texts_encoded=runtime.texts.items_processed,
            image_queue_depth=runtime.images.queue_depth(),
            text_queue_depth=runtime.texts.queue_depth(),
        )
