from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_STORED: _ClassVar[Outcome]
    OUTCOME_PRESENT: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_STORED: Outcome
OUTCOME_PRESENT: Outcome
OUTCOME_FAILED: Outcome

class IngestRequest(_message.Message):
    __slots__ = ("collection", "image", "uri", "metadata", "typed_metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TypedMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FilterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FilterValue, _Mapping]] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TYPED_METADATA_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: bytes
    uri: str
    metadata: _containers.ScalarMap[str, str]
    typed_metadata: _containers.MessageMap[str, FilterValue]
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[bytes] = ..., uri: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., typed_metadata: _Optional[_Mapping[str, FilterValue]] = ...) -> None: ...

class IngestTotals(_message.Message):
    __slots__ = ("received", "stored", "present", "failed")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    received: int
    stored: int
    present: int
    failed: int
    def __init__(self, received: _Optional[int] = ..., stored: _Optional[int] = ..., present: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("index", "uri", "id", "outcome", "error", "totals")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    index: int
    uri: str
    id: str
    outcome: Outcome
    error: str
    totals: IngestTotals
    def __init__(self, index: _Optional[int] = ..., uri: _Optional[str] = ..., id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., error: _Optional[str] = ..., totals: _Optional[_Union[IngestTotals, _Mapping]] = ...) -> None: ...

class FilterValue(_message.Message):
    __slots__ = ("string_value", "int_value", "float_value", "bool_value", "list_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    float_value: float
    bool_value: bool
    list_value: FilterValueList
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., list_value: _Optional[_Union[FilterValueList, _Mapping]] = ...) -> None: ...

class FilterValueList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[FilterValue]
    def __init__(self, values: _Optional[_Iterable[_Union[FilterValue, _Mapping]]] = ...) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("collection", "top_k", "offset", "filter", "filter_params", "output_fields", "min_score")
    class FilterParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FilterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FilterValue, _Mapping]] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FILTER_PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    top_k: int
    offset: int
    filter: str
    filter_params: _containers.MessageMap[str, FilterValue]
    output_fields: _containers.RepeatedScalarFieldContainer[str]
    min_score: float
    def __init__(self, collection: _Optional[str] = ..., top_k: _Optional[int] = ..., offset: _Optional[int] = ..., filter: _Optional[str] = ..., filter_params: _Optional[_Mapping[str, FilterValue]] = ..., output_fields: _Optional[_Iterable[str]] = ..., min_score: _Optional[float] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("id", "uri", "metadata", "model", "ingested_at", "vector", "typed_metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TypedMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FilterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FilterValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TYPED_METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    uri: str
    metadata: _containers.ScalarMap[str, str]
    model: str
    ingested_at: int
    vector: _containers.RepeatedScalarFieldContainer[float]
    typed_metadata: _containers.MessageMap[str, FilterValue]
    def __init__(self, id: _Optional[str] = ..., uri: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., model: _Optional[str] = ..., ingested_at: _Optional[int] = ..., vector: _Optional[_Iterable[float]] = ..., typed_metadata: _Optional[_Mapping[str, FilterValue]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("record", "score")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    record: Record
    score: float
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchTextRequest(_message.Message):
    __slots__ = ("text", "options")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    options: SearchOptions
    def __init__(self, text: _Optional[str] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchTextResponse(_message.Message):
    __slots__ = ("hits", "model")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    model: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class SearchImageRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    options: SearchOptions
    def __init__(self, image: _Optional[bytes] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchImageResponse(_message.Message):
    __slots__ = ("hits", "model")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    model: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class QueryPart(_message.Message):
    __slots__ = ("text", "image", "id", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    id: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("parts", "options")
    PARTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[QueryPart]
    options: SearchOptions
    def __init__(self, parts: _Optional[_Iterable[_Union[QueryPart, _Mapping]]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "model")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    model: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class GetThumbnailRequest(_message.Message):
    __slots__ = ("collection", "id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class GetThumbnailResponse(_message.Message):
    __slots__ = ("jpeg",)
    JPEG_FIELD_NUMBER: _ClassVar[int]
    jpeg: bytes
    def __init__(self, jpeg: _Optional[bytes] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "output_fields")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    output_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., output_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "filter_params", "dry_run")
    class FilterParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FilterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FilterValue, _Mapping]] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FILTER_PARAMS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    filter_params: _containers.MessageMap[str, FilterValue]
    dry_run: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ..., filter_params: _Optional[_Mapping[str, FilterValue]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("collection", "count", "model", "dimension", "index_type", "metric_type")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_TYPE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    count: int
    model: str
    dimension: int
    index_type: str
    metric_type: str
    def __init__(self, collection: _Optional[str] = ..., count: _Optional[int] = ..., model: _Optional[str] = ..., dimension: _Optional[int] = ..., index_type: _Optional[str] = ..., metric_type: _Optional[str] = ...) -> None: ...

class GetLimitsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLimitsResponse(_message.Message):
    __slots__ = ("max_message_bytes", "max_image_bytes", "max_top_k", "max_offset")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_image_bytes: int
    max_top_k: int
    max_offset: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_top_k: _Optional[int] = ..., max_offset: _Optional[int] = ...) -> None: ...
