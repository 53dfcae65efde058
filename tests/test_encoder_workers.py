"""The worker processes that decode images and tokenise texts, and the tokenizer they share."""

import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection

import clip
import grpc
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from images import jpeg, png, png_with_size_header, solid, two_tone
from PIL import Image

from encoder_service.images import ImageLimits, RejectedImage, pixels_for_clip
from encoder_service.service import _batching_errors
from encoder_service.tokens import _word_ids, tokenize
from encoder_service.workers import MIN_TEXTS_PER_TASK, WorkerDied, WorkerPool, _serve, _Worker
from imagesearch.errors import ServiceError

LIMITS = ImageLimits(max_bytes=40_000, max_pixels=1_000_000)
RESOLUTION, CONTEXT = 32, 77
TIME_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(2, LIMITS, RESOLUTION, CONTEXT, TIME_LIMIT_S)
    try:
        yield workers
    finally:
        workers.close()


def mixed_images() -> list[bytes]:
    return [
        png(two_tone((200, 0, 0), (0, 0, 200))),
        b"",
        b"no picture at all",
        png_with_size_header(2000, 2000),
        png(Image.effect_noise((200, 200), 64).convert("RGB")),  # over the byte limit
        jpeg(two_tone((0, 200, 0), (9, 9, 9), (64, 48))),
        png(solid((10, 200, 10))),
    ]


def same_outcome(left: np.ndarray | RejectedImage, right: np.ndarray | RejectedImage) -> bool:
    if isinstance(left, RejectedImage) or isinstance(right, RejectedImage):
        return left == right
    return left.shape == right.shape and bool(np.array_equal(left, right))


def test_processes_decode_as_this_process_would_in_order_with_each_error_alone(pool: WorkerPool) -> None:
    images = mixed_images()
    outcomes = pool.decode(images)
    expected = [pixels_for_clip(data, LIMITS, RESOLUTION) for data in images]
    assert all(same_outcome(got, want) for got, want in zip(outcomes, expected, strict=True))
    assert [isinstance(outcome, RejectedImage) for outcome in outcomes] == [False, *[True] * 4, False, False]
    assert outcomes[3] == RejectedImage(
        "2000x2000 pixels is over the limit of 1000000 pixels (decompression bomb?)"
    )
    assert outcomes[0].shape == (RESOLUTION, RESOLUTION, 3) and outcomes[0].dtype == np.uint8


def test_a_worker_that_dies_is_replaced_and_no_request_fails() -> None:
    pool = WorkerPool(1, LIMITS, RESOLUTION, CONTEXT, TIME_LIMIT_S)
    try:
        [before] = pool.pids()
        os.kill(before, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        images = mixed_images()
        outcomes = pool.decode(images)
        [after] = pool.pids()
    finally:
        pool.close()
    expected = [pixels_for_clip(data, LIMITS, RESOLUTION) for data in images]
    assert all(same_outcome(got, want) for got, want in zip(outcomes, expected, strict=True))
    assert after != before


def test_a_worker_whose_replacement_dies_as_it_starts_fails_its_item_alone() -> None:
    """The replacement's death came out as a bare EOFError: the whole call failed UNKNOWN, with no message."""
    context = multiprocessing.get_context("spawn")
    started: list[int] = []

    def start() -> tuple[multiprocessing.process.BaseProcess, Connection]:
        parent, child = context.Pipe()
        first = not started
        target, args = (_serve, (child, LIMITS, RESOLUTION, CONTEXT)) if first else (os._exit, (1,))
        process = context.Process(target=target, args=args, daemon=True)
        process.start()
        child.close()
        started.append(process.pid or 0)
        return process, parent

    worker = _Worker(start, TIME_LIMIT_S)
    try:
        worker.wait_ready()
        os.kill(started[0], signal.SIGKILL)
        with pytest.raises(WorkerDied, match="a new worker process died as it started"):
            worker.call(("decode", png(solid((1, 2, 3)))), Connection.recv)
    finally:
        worker.close()


def test_a_task_that_takes_a_worker_past_its_time_limit_fails_and_the_worker_is_replaced() -> None:
    """A decoder that hung held its worker for good; with every worker held, the encoder answered nothing
    while its health said SERVING. CLIP's clean-up of 40 MB of text takes seconds: twenty times the limit."""
    pool = WorkerPool(1, LIMITS, RESOLUTION, CONTEXT, time_limit_s=0.2)
    try:
        [before] = pool.pids()
        with pytest.raises(WorkerDied, match=r"^it took over 0.2 s \(its worker process was stopped\)$"):
            pool.tokenize(["x " * 20_000_000, *["a dog"] * (2 * MIN_TEXTS_PER_TASK)])
        [after] = pool.pids()
        for worker in pool._workers:  # the new worker's first task loads PIL's plugins: slow on a busy host
            worker.time_limit_s = TIME_LIMIT_S
        outcomes = pool.decode([png(solid((1, 2, 3)))])
    finally:
        pool.close()
    assert after != before and isinstance(outcomes[0], np.ndarray)


def test_pictures_still_queued_when_their_call_ends_are_not_decoded() -> None:
    """They were: a caller gone at its deadline kept the workers busy, and the callers after it waited."""
    pool = WorkerPool(1, LIMITS, RESOLUTION, CONTEXT, TIME_LIMIT_S)
    try:
        images = [png(solid((index, 0, 0))) for index in range(6)]
        # The call "ends" as soon as the pool registers for it: only what the one worker holds goes on.
        ended_meanwhile = pool.decode(images, lambda end: end())
        # grpc's add_callback says False, and never calls back, for a call that has ended already.
        ended_before = pool.decode(images, lambda end: False)
        after = pool.decode(images)
    finally:
        pool.close()
    for outcomes in (ended_meanwhile, ended_before):
        dropped = [outcome for outcome in outcomes if isinstance(outcome, RejectedImage)]
        assert len(dropped) >= len(images) - 1
        assert set(dropped) == {RejectedImage("not decoded: the call ended first")}
    assert not any(isinstance(outcome, RejectedImage) for outcome in after)
    # A call that comes as the service stops is answered, not left waiting behind the workers' end.
    assert pool.decode(images[:1]) == [RejectedImage("decoding failed: the worker processes are stopping")]


def test_texts_whose_tokenising_crashed_fail_unavailable_to_be_retried() -> None:
    """It was UNKNOWN, "Exception calling application": texts have no per-item errors to carry it."""
    with pytest.raises(ServiceError) as refused, _batching_errors():
        raise WorkerDied("the worker process died twice on this item")
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert refused.value.message == (
        "tokenising the texts failed: the worker process died twice on this item; retry"
    )


def test_long_requests_are_tokenised_in_the_processes_as_clip_tokenises(pool: WorkerPool) -> None:
    texts = [f"a photo of thing number {index}" for index in range(3 * MIN_TEXTS_PER_TASK)] + ["word " * 100]
    tokenized = pool.tokenize(texts)
    assert np.array_equal(tokenized.tokens, clip.tokenize(texts, truncate=True).numpy())
    assert tokenized.truncated == [False] * (len(texts) - 1) + [True]


@given(st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_our_tokens_are_clips_for_any_text(texts: list[str]) -> None:
    tokenized = tokenize(texts, CONTEXT)
    assert np.array_equal(tokenized.tokens, clip.tokenize(texts, truncate=True).numpy())
    whole = clip.tokenize(texts, context_length=4 * 300 + 2).numpy()  # room for every byte of any text
    assert tokenized.truncated == [int(np.count_nonzero(row)) > CONTEXT for row in whole]


def _clips_own_tokenizer():  # type: ignore[no-untyped-def]
    """A tokenizer of CLIP's own, with its own memo of split words."""
    return clip.simple_tokenizer.SimpleTokenizer()


def test_only_short_words_are_memoised_so_unique_long_ones_cannot_grow_the_process() -> None:
    """Unique 4,096-letter words, each memoised, grew a process by 71 KB a query, up to gigabytes."""
    tokenizer = _clips_own_tokenizer()
    long_word, short_word = "q" * 4096, "dog"
    assert _word_ids(tokenizer, long_word) == _word_ids(tokenizer, long_word)
    assert long_word not in tokenizer.cache
    assert _word_ids(tokenizer, short_word) == [clip.simple_tokenizer.SimpleTokenizer().encoder["dog</w>"]]
    assert short_word in tokenizer.cache


@given(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=400))
@example("<|startoftext|>")
def test_our_split_of_any_word_is_clips(word: str) -> None:
    """Our words are split by `merged`, from a heap, where CLIP's `bpe` scans the word in every round: a word
    of 4,096 random letters took CLIP 0.6 s and blocked a decoding process (texts are tokenised there too).
    CLIP's special words (`<|startoftext|>`) are split by neither: both tokenizers' memos hold them."""
    ours, clips = _clips_own_tokenizer(), _clips_own_tokenizer()
    symbols = "".join(clips.byte_encoder[byte] for byte in word.encode("utf-8"))
    assert _word_ids(ours, symbols) == [clips.encoder[token] for token in clips.bpe(symbols).split(" ")]


def test_texts_of_thousands_of_letters_in_one_word_are_clips_tokens() -> None:
    letters = np.random.default_rng(7).choice(list("abcdefghijklmnopqrstuvwxyz"), 3000)
    texts = ["".join(letters), "a " + "".join(letters[:500]) + " dog", "international" * 200]
    tokenized = tokenize(texts, CONTEXT)
    assert np.array_equal(tokenized.tokens, clip.tokenize(texts, truncate=True).numpy())
    assert tokenized.truncated == [True, True, True]
