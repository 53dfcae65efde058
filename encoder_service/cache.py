"""A bounded cache of recent query vectors: people search for the same words again and again."""

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

Value = TypeVar("Value")


class QueryCache(Generic[Value]):
    """The `capacity` most recently used values, keyed by (model, text) so that a vector is never served for
    another model's query. Texts longer than `longest_cached_text` characters are not kept: queries are short,
    and long texts would make the cache's memory depend on what callers send."""

    def __init__(self, capacity: int, longest_cached_text: int = 256) -> None:
        self.capacity = capacity
        self.longest_cached_text = longest_cached_text
        self.hits = 0
        self._values: OrderedDict[tuple[str, str], Value] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, model: str, text: str) -> Value | None:
        with self._lock:
            value = self._values.get((model, text))
            if value is not None:
                self._values.move_to_end((model, text))
                self.hits += 1
            return value

    def put(self, model: str, text: str, value: Value) -> None:
        if self.capacity == 0 or len(text) > self.longest_cached_text:
            return
        with self._lock:
            self._values[(model, text)] = value
            self._values.move_to_end((model, text))
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
