"""CLIP's own tokenizer, without torch: the encoder and its worker processes tokenise with it.

`clip/__init__.py` imports torch (seconds and hundreds of megabytes per process), so the tokenizer's module is
loaded from its file in the installed `clip` package instead of through the package.
"""

import functools
import heapq
import importlib.util
import itertools
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

# The tokenizer's memo of split words: past this many it starts afresh, and it keeps only words of at most
# this many symbols (real words are short), so that a stream of unique words cannot grow a long-lived process
# without limit. Unique 4,096-letter words, each memoised, grew it by 71 KB a query: 7 GB at the word cap.
_MAX_MEMOISED_WORDS = 100_000
_LONGEST_MEMOISED_WORD = 64


@dataclass(frozen=True)
class TokenizedTexts:
    tokens: np.ndarray  # (n, context_length) int64, zero-padded, as clip.tokenize(texts, truncate=True)
    truncated: list[bool]
    wordless: list[bool]  # the text has no word: its tokens are the start and the end alone


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
def _module_and_tokenizer():  # type: ignore[no-untyped-def]
    module = _module()
    return module, module.SimpleTokenizer()


def merged(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's byte-pair merges of one word's symbols, exactly as SimpleTokenizer.bpe makes them: round after
    round, the pair of lowest rank, every occurrence merged left to right. Its loop scans the whole word in
    each round, so a word of thousands of random letters took about a second; a heap of the pairs, by rank and
    then position, takes milliseconds. A symbol keeps its position when the one after it merges into it."""
    text: list[str] = list(symbols)
    after = [*range(1, len(text)), -1]
    before = [-1, *range(len(text) - 1)]
    heap = [(ranks[pair], left) for left, pair in enumerate(itertools.pairwise(text)) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        rank = heap[0][0]
        lefts = set()
        while heap and heap[0][0] == rank:  # every occurrence of this one pair
            lefts.add(heapq.heappop(heap)[1])
        for left in sorted(lefts):
            right = after[left]
            if right < 0 or ranks.get((text[left], text[right])) != rank:
                continue  # merged away earlier, or a pair that has changed since it was queued
            text[left] += text[right]
            after[left] = after[right]
            if after[left] >= 0:
                before[after[left]] = left
            text[right] = ""
            for pair_left in (before[left], left):
                if pair_left >= 0 and after[pair_left] >= 0:
                    pair = (text[pair_left], text[after[pair_left]])
                    if pair in ranks:
                        heapq.heappush(heap, (ranks[pair], pair_left))
    return [symbol for symbol in text if symbol]


def _word_ids(tokenizer, word: str) -> list[int]:  # type: ignore[no-untyped-def]
    """The token ids of one word as the tokenizer's `bpe` splits it, memoised in its own cache if short."""
    split = tokenizer.cache.get(word)
    if split is None:
        split = " ".join(merged([*word[:-1], word[-1] + "</w>"], tokenizer.bpe_ranks))
        if len(word) <= _LONGEST_MEMOISED_WORD:
            tokenizer.cache[word] = split
    return [tokenizer.encoder[symbol] for symbol in split.split(" ")]


def _ids(module: ModuleType, tokenizer, text: str, most: int) -> list[int]:  # type: ignore[no-untyped-def]
    """The first `most` ids of SimpleTokenizer.encode(text): the words after those are not split at all (a
    100 KB text used to be split to its end, to keep 75 tokens)."""
    ids: list[int] = []
    for match in tokenizer.pat.finditer(module.whitespace_clean(module.basic_clean(text)).lower()):
        word = "".join(tokenizer.byte_encoder[byte] for byte in match.group().encode("utf-8"))
        ids.extend(_word_ids(tokenizer, word))
        if len(ids) >= most:
            return ids[:most]
    return ids


def tokenize(texts: list[str], context_length: int) -> TokenizedTexts:
    """CLIP's tokens for `texts`, cut to `context_length` as `clip.tokenize(..., truncate=True)` cuts them,
    which texts were cut, and which have no word."""
    module, tokenizer = _module_and_tokenizer()
    if len(tokenizer.cache) > _MAX_MEMOISED_WORDS:
        tokenizer.cache = {token: token for token in ("<|startoftext|>", "<|endoftext|>")}
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    tokens = np.zeros((len(texts), context_length), dtype=np.int64)
    truncated, wordless = [], []
    for row, text in enumerate(texts):
        # One id past what fits tells whether the text was cut.
        ids = [start, *_ids(module, tokenizer, text, context_length - 1), end]
        truncated.append(len(ids) > context_length)
        wordless.append(len(ids) == 2)
        if truncated[-1]:
            ids = [*ids[: context_length - 1], end]
        tokens[row, : len(ids)] = ids
    return TokenizedTexts(tokens, truncated, wordless)
