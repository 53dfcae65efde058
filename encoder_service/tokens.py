"""CLIP's own tokenizer, without torch: the encoder and its worker processes tokenise with it.

`clip/__init__.py` imports torch (seconds and hundreds of megabytes per process), so the tokenizer's module is
loaded from its file in the installed `clip` package instead of through the package.
"""

import functools
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

# The tokenizer memoises every word it has split, without bound; past this many it starts afresh, so that a
# stream of unique words cannot grow a long-lived process without limit.
_MAX_MEMOISED_WORDS = 100_000


@dataclass(frozen=True)
class TokenizedTexts:
    tokens: np.ndarray  # (n, context_length) int64, zero-padded, as clip.tokenize(texts, truncate=True)
    truncated: list[bool]


def _module() -> ModuleType:
    package = importlib.util.find_spec("clip")
    assert package is not None and package.submodule_search_locations, "the openai-clip package is missing"
    path = os.path.join(package.submodule_search_locations[0], "simple_tokenizer.py")
    spec = importlib.util.spec_from_file_location("_clip_simple_tokenizer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _tokenizer():  # type: ignore[no-untyped-def]
    return _module().SimpleTokenizer()


def tokenize(texts: list[str], context_length: int) -> TokenizedTexts:
    """CLIP's tokens for `texts`, cut to `context_length` as `clip.tokenize(..., truncate=True)` cuts them,
    and which texts were cut."""
    tokenizer = _tokenizer()
    if len(tokenizer.cache) > _MAX_MEMOISED_WORDS:
        tokenizer.cache = {token: token for token in ("<|startoftext|>", "<|endoftext|>")}
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    tokens = np.zeros((len(texts), context_length), dtype=np.int64)
    truncated = []
    for row, text in enumerate(texts):
        ids = [start, *tokenizer.encode(text), end]
        truncated.append(len(ids) > context_length)
        if truncated[-1]:
            ids = [*ids[: context_length - 1], end]
        tokens[row, : len(ids)] = ids
    return TokenizedTexts(tokens, truncated)
