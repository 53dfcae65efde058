from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EncodeTextRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class TextResult(_message.Message):
    __slots__ = ("vector", "truncated")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    truncated: bool
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("model", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    results: _containers.RepeatedCompositeFieldContainer[TextResult]
    def __init__(self, model: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TextResult, _Mapping]]] = ...) -> None: ...

class EncodeImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("vector", "error", "reason")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    error: str
    reason: str
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ..., error: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EncodeImagesResponse(_message.Message):
    __slots__ = ("model", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    def __init__(self, model: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "dimension", "device", "dtype", "max_batch_size", "max_batch_delay_ms", "max_queue_size", "max_items_per_request", "max_image_bytes", "max_image_pixels", "image_resolution", "context_length", "image_forward_passes", "images_encoded", "text_forward_passes", "texts_encoded", "image_queue_depth", "text_queue_depth", "decode_workers", "jpeg_decoding", "image_cuda_graphs", "text_cuda_graphs", "text_cache_size", "text_cache_hits", "image_items_running", "text_items_running")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FORWARD_PASSES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_ENCODED_FIELD_NUMBER: _ClassVar[int]
    TEXT_FORWARD_PASSES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_ENCODED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    TEXT_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    DECODE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    JPEG_DECODING_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CUDA_GRAPHS_FIELD_NUMBER: _ClassVar[int]
    TEXT_CUDA_GRAPHS_FIELD_NUMBER: _ClassVar[int]
    TEXT_CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEXT_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ITEMS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    TEXT_ITEMS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    model: str
    dimension: int
    device: str
    dtype: str
    max_batch_size: int
    max_batch_delay_ms: int
    max_queue_size: int
    max_items_per_request: int
    max_image_bytes: int
    max_image_pixels: int
    image_resolution: int
    context_length: int
    image_forward_passes: int
    images_encoded: int
    text_forward_passes: int
    texts_encoded: int
    image_queue_depth: int
    text_queue_depth: int
    decode_workers: int
    jpeg_decoding: str
    image_cuda_graphs: int
    text_cuda_graphs: int
    text_cache_size: int
    text_cache_hits: int
    image_items_running: int
    text_items_running: int
    def __init__(self, model: _Optional[str] = ..., dimension: _Optional[int] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_batch_delay_ms: _Optional[int] = ..., max_queue_size: _Optional[int] = ..., max_items_per_request: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., image_resolution: _Optional[int] = ..., context_length: _Optional[int] = ..., image_forward_passes: _Optional[int] = ..., images_encoded: _Optional[int] = ..., text_forward_passes: _Optional[int] = ..., texts_encoded: _Optional[int] = ..., image_queue_depth: _Optional[int] = ..., text_queue_depth: _Optional[int] = ..., decode_workers: _Optional[int] = ..., jpeg_decoding: _Optional[str] = ..., image_cuda_graphs: _Optional[int] = ..., text_cuda_graphs: _Optional[int] = ..., text_cache_size: _Optional[int] = ..., text_cache_hits: _Optional[int] = ..., image_items_running: _Optional[int] = ..., text_items_running: _Optional[int] = ...) -> None: ...
