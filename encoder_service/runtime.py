"""The loaded encoder as one object: model, worker processes, forward passes, batchers and query cache are
loaded, warmed up and closed together (as Immich's ML service keeps a model object), and requests come in as
texts and image bytes."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .batcher import DynamicBatcher
from .cache import QueryCache
from .config import EncoderConfig
from .graphs import GraphedForward, batch_buckets
from .images import ImageLimits, RejectedImage, small_jpeg
from .metrics import EncoderMetrics
from .model import ClipModel
from .towers import CpuThread, ImageTower, JpegDecoding, TextTower, Turn
from .workers import WhenCallEnds, WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextVector:
    vector: np.ndarray
    truncated: bool  # the text was cut, at max_text_chars or at the model's context


class NoWords(ValueError):
    """A text in which CLIP's tokenizer finds no word: its vector would be the same for all of them."""

    def __init__(self, index: int, text: str) -> None:
        shown = text if len(text) <= 40 else f"{text[:40]}…"
        super().__init__(
            f"texts[{index}] ({shown!r}) has no words: CLIP reads only spaces, control characters or markup "
            "in it"
        )


def text_length_buckets(context_length: int) -> list[int]:
    """Text lengths (in tokens) whose forward passes are captured as CUDA graphs: short queries are common."""
    return [*(length for length in (8, 16, 32) if length < context_length), context_length]


class EncoderRuntime:
    """`config` must be resolved for its device (EncoderConfig.resolved_for)."""

    def __init__(self, config: EncoderConfig, metrics: EncoderMetrics) -> None:
        self.config = config
        self.cpu = CpuThread()
        self.model = self.cpu.run(
            lambda: ClipModel(config.model, config.device, config.model_cache, config.precision)
        )
        model = self.model
        limits = ImageLimits(config.max_image_bytes, config.max_image_pixels)
        self.workers = WorkerPool(
            config.decode_workers,
            limits,
            model.image_resolution,
            model.context_length,
            config.decode_timeout_s,
        )
        self.image_forward = GraphedForward(model.image_vectors)
        self.text_forward = GraphedForward(model.text_vectors)
        self.jpegs = self._working_jpeg_decoding() if config.jpeg_decoding == "device" else None
        self.image_tower = ImageTower(
            model, self.image_forward, self.workers, limits, self.jpegs, Turn(model.device, self.cpu)
        )
        self.text_tower = TextTower(model, self.text_forward, Turn(model.device, self.cpu))
        self._warm_up()
        if model.device.type == "cuda":
            self._capture_graphs()
        self.cache: QueryCache[TextVector] = QueryCache(config.text_cache_size)

        def batcher(name: str, run: Callable[[list], Sequence]) -> DynamicBatcher:
            batcher: DynamicBatcher = DynamicBatcher(
                name,
                run,
                config.max_batch_size,
                config.max_batch_delay_ms / 1000,
                config.max_queue_size,
                metrics.batch_observer(name),
            )
            metrics.queue_depth.labels(name).set_function(batcher.queue_depth)
            return batcher

        # The batchers, one per tower: their counters are what GetModelInfo reports.
        self.images = batcher("image", self.image_tower.run)
        self.texts = batcher("text", self.text_tower.run)

    def _working_jpeg_decoding(self) -> JpegDecoding | None:
        """The device's JPEG decoding, once a first JPEG has gone through it (so that no call pays for its
        start); None where that fails (nvJPEG cannot start on some GPUs and drivers): then the worker
        processes decode every picture, rather than each call failing on the device first."""
        model, config = self.model, self.config
        decoding = JpegDecoding(
            model.device, model.image_resolution, self.cpu, config.max_batch_size, config.max_queue_size
        )
        if decoding([small_jpeg()]) != [None]:
            return decoding
        decoding.close()
        log.error(
            "JPEGs cannot be decoded on %s (see the warning above): the worker processes decode them all",
            model.device,
        )
        return None

    def _warm_up(self) -> None:
        """One pass of each tower, so that the first call is not the one that pays for lazy initialisation."""
        resolution = self.model.image_resolution
        self.image_tower.run([np.zeros((resolution, resolution, 3), dtype=np.uint8)])
        self.text_tower.run(list(self.workers.tokenize(["warm up"]).tokens))

    def _capture_graphs(self) -> None:
        """CUDA graphs for every batch size bucket (and text length bucket); eager passes if capture fails."""
        model, batches = self.model, batch_buckets(self.config.max_batch_size)
        resolution, device = model.image_resolution, model.device
        lengths = text_length_buckets(model.context_length)
        for forward, shapes, dtype in (
            (self.image_forward, [(size, resolution, resolution, 3) for size in batches], torch.uint8),
            (self.text_forward, [(size, length) for size in batches for length in lengths], torch.long),
        ):
            try:
                forward.capture(shapes, dtype, device)
            except RuntimeError:
                log.exception("capturing CUDA graphs failed; forward passes run eagerly")

    def encode_texts(self, texts: Sequence[str]) -> list[TextVector]:
        """A vector for each text, from the cache where a recent query had the same text; NoWords for a text
        with none."""
        limit, name = self.config.max_text_chars, self.model.name
        results = [self.cache.get(name, text) for text in texts]
        missing = [index for index, result in enumerate(results) if result is None]
        if missing:
            with self.texts.expect(len(missing)) as arrival:
                tokenized = self.workers.tokenize([texts[index][:limit] for index in missing])
                if True in tokenized.wordless:
                    index = missing[tokenized.wordless.index(True)]
                    raise NoWords(index, texts[index])
                future = arrival.submit(list(tokenized.tokens))
            for index, vector, cut in zip(missing, future.result(), tokenized.truncated, strict=True):
                results[index] = TextVector(vector, cut or len(texts[index]) > limit)
                self.cache.put(name, texts[index], results[index])
        return results  # type: ignore[return-value]

    def encode_images(
        self, images: Sequence[bytes], when_call_ends: WhenCallEnds | None = None
    ) -> list[np.ndarray | RejectedImage]:
        """For each image in order, its vector or why it has none."""
        with self.images.expect(len(images)) as arrival:
            prepared = self.image_tower.prepare(images, when_call_ends)
            good = [item for item in prepared if not isinstance(item, RejectedImage)]
            future = arrival.submit(good)
        vectors = iter(future.result())
        return [item if isinstance(item, RejectedImage) else next(vectors) for item in prepared]

    def close(self) -> None:
        """Runs what is queued, then stops the batchers and the worker processes."""
        self.images.close()
        if self.jpegs is not None:
            self.jpegs.close()
        self.texts.close()
        self.workers.close()
        self.cpu.close()
