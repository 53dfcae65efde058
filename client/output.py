"""What the command line prints: tables for people, JSON for programs, and names shown safely."""

import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Never

import numpy as np
from tqdm import tqdm

from .ingest import Progress
from .models import Hit, IngestItem, IngestSummary


def shown(text: str) -> str:
    """`text` with every control or invisible character escaped, so that a file name cannot fake a row."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape", "backslashreplace").decode("ascii")
        for char in text
    )


def _plain(value: Any) -> Any:
    """Results as JSON-ready data; fields that were not asked for (None) are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((field.name, getattr(value, field.name)) for field in dataclasses.fields(value))
        return {name: _plain(item) for name, item in fields if item is not None}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def print_json(value: Any) -> None:
    print(json.dumps(_plain(value), indent=2, ensure_ascii=False))


def print_summary_json(summary: IngestSummary, interrupted: str = "") -> None:
    """The totals, then every item; `interrupted` says why the run ended early, when it did."""
    totals = {
        "total": summary.total,
        "stored": summary.stored,
        "present": summary.present,
        "failed": summary.failed,
        "skipped": len(summary.skipped),
    }
    ended = {"interrupted": interrupted} if interrupted else {}
    print_json({**totals, **ended, "items": summary.items})


def print_summary(summary: IngestSummary) -> None:
    for item in summary.items:
        if item.outcome == "failed":
            print(f"FAILED  {shown(item.uri)}: {shown(item.error)}")
    unfinished = summary.total - len(summary.items)
    print(
        f"stored {summary.stored}, already present {summary.present}, failed {summary.failed}, "
        f"skipped {len(summary.skipped)} (not images)" + (f", not done {unfinished}" if unfinished else "")
    )


def print_hits(hits: Sequence[Hit]) -> None:
    if not hits:
        print("no hits")
        return
    print(f"{'rank':>4}  {'score':>7}  path")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>4}  {hit.score:7.4f}  {shown(hit.uri)}")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A bar on stderr that an ingestion advances, drawn from its first item (an empty bar came before a
    refusal of the arguments); None when not `enabled` or when stderr is no terminal (a log, a pipe), where
    each redraw was one more line."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    bar: tqdm[Never] | None = None  # drawn at the first item

    def advance(item: IngestItem, summary: IngestSummary) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(unit="img", dynamic_ncols=True, file=sys.stderr)
        bar.total = summary.total
        # Drawn by update(), at most every tenth of a second: a redraw for every item cost the CLI 0.1 ms
        # each, a quarter of a core at 2,500 pictures a second.
        bar.set_postfix(stored=summary.stored, present=summary.present, failed=summary.failed, refresh=False)
        bar.update(1)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()
