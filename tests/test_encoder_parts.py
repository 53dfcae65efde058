"""Small parts of the encoder alone: settings sized for the device, the query cache, vectors on the wire."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from encoder_service.cache import QueryCache
from encoder_service.config import EncoderConfig, parse_args
from encoder_service.service import vector_message
from imagesearch.v1 import encoder_pb2

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # naming a device needs no GPU


def test_sizes_left_to_the_device_are_todays_on_the_cpu_and_larger_on_cuda() -> None:
    on_cpu, on_cuda = EncoderConfig().resolved_for(CPU), EncoderConfig().resolved_for(CUDA)
    sizes = ("max_batch_size", "max_queue_size", "grpc_workers", "decode_workers")
    assert [getattr(on_cpu, name) for name in sizes] == [32, 512, 64, 4]
    assert (on_cpu.jpeg_decoding, on_cpu.text_cache_size, on_cpu.max_batch_delay_ms) == ("processes", 0, 5)
    assert (on_cuda.max_batch_size, on_cuda.max_queue_size, on_cuda.grpc_workers) == (256, 2048, 128)
    assert 4 <= on_cuda.decode_workers <= 16
    assert (on_cuda.jpeg_decoding, on_cuda.text_cache_size) == ("device", 4096)


def test_sizes_given_as_flags_or_variables_are_kept_on_any_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCODER_MAX_QUEUE_SIZE", "100")
    flags = ["--max-batch-size", "64", "--decode-workers", "2", "--jpeg-decoding", "processes"]
    flags += ["--text-cache-size", "0"]
    for device in (CPU, CUDA):
        config = parse_args(flags).resolved_for(device)
        assert (config.max_batch_size, config.max_queue_size, config.decode_workers) == (64, 100, 2)
        assert (config.jpeg_decoding, config.text_cache_size) == ("processes", 0)


def test_a_queue_smaller_than_a_request_is_refused_once_sized() -> None:
    with pytest.raises(ValueError, match="must not exceed max_queue_size"):
        EncoderConfig(max_items_per_request=64, max_queue_size=10)
    with pytest.raises(ValueError, match="must not exceed max_queue_size"):
        EncoderConfig(max_items_per_request=1000).resolved_for(CPU)


def test_the_query_cache_is_bounded_keyed_by_model_and_keeps_recent_queries() -> None:
    cache: QueryCache[str] = QueryCache(capacity=2, longest_cached_text=20)
    cache.put("model-a", "a dog", "vector a")
    cache.put("model-b", "a dog", "vector b")
    assert (cache.get("model-a", "a dog"), cache.get("model-b", "a dog")) == ("vector a", "vector b")
    cache.get("model-a", "a dog")  # model-a's entry is now the most recently used
    cache.put("model-a", "a cat", "vector c")
    assert len(cache) == 2
    assert cache.get("model-b", "a dog") is None  # the least recently used went
    assert cache.get("model-a", "a dog") == "vector a"
    cache.put("model-a", "x" * 21, "too long to keep")
    assert cache.get("model-a", "x" * 21) is None
    assert cache.hits == 4


def test_a_cache_of_capacity_zero_keeps_nothing() -> None:
    cache: QueryCache[str] = QueryCache(capacity=0)
    cache.put("model", "a dog", "vector")
    assert (len(cache), cache.get("model", "a dog")) == (0, None)


@given(arrays(np.float32, st.integers(1, 1024), elements=st.floats(-2, 2, width=32)))
def test_vectors_are_written_as_the_proto_runtime_writes_them(values: np.ndarray) -> None:
    built = vector_message(values)
    assert built.SerializeToString() == encoder_pb2.Vector(values=values.tolist()).SerializeToString()
    assert np.array_equal(np.asarray(built.values, dtype=np.float32), values)
