"""What each `imgsearch` command does, given its parsed arguments; each returns the exit code."""

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from imagesearch.tls import channel_credentials

from .errors import ImageSearchError, IngestInterrupted
from .grid import write_grid
from .local import local_services
from .models import IngestItem, IngestSummary, MetadataValue, QueryPart
from .output import print_hits, print_json, print_summary, print_summary_json, progress_bar, shown
from .sync import EncoderClient, SearchClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_READER_GONE = 141  # as a command that SIGPIPE stopped
EXIT_INTERRUPTED = 130  # as a command that SIGINT stopped
# Ids asked for at once by `delete --id`, to name those not stored: a Get answers each record whole (its
# metadata twice, up to 64 KiB), and 256 of the largest fit the service's message limit.
_IDS_PER_GET = 256


class UsageError(Exception):
    pass


def key_values(pairs: Sequence[str], flag: str, parse: Any = str) -> dict[str, Any]:
    """`KEY=VALUE` arguments as a mapping; a key given twice is a usage error, not a silent overwrite."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, not {pair!r}")
        if key in result:
            raise UsageError(f"{flag} {key}=... is given twice")
        try:
            result[key] = parse(value)
        except ValueError as error:
            raise UsageError(f"{flag} {pair!r}: {error}") from None
    return result


def _merged(*groups: tuple[dict[str, Any], str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for values, flag in groups:
        for key in values.keys() & merged.keys():
            raise UsageError(f"{key!r} is given both as text and as JSON ({flag})")
        merged.update(values)
    return merged


def filter_params(args: argparse.Namespace) -> dict[str, Any]:
    return _merged(
        (key_values(args.param, "--param"), "--param"),
        (key_values(args.param_json, "--param-json", json.loads), "--param-json"),
    )


def _numbers_given_as_text(pairs: Sequence[str]) -> list[str]:
    """The --param pairs whose value JSON reads as a number or true/false (`year=2024`): a filter that
    compares a number stored in metadata with one of them finds nothing, and no error says why."""
    given = key_values(pairs, "--param")
    return [f"{key}={value}" for key, value in given.items() if _is_json_scalar(value)]


def _is_json_scalar(text: str) -> bool:
    try:
        return isinstance(json.loads(text), int | float | bool)
    except ValueError:
        return False


def tags(args: argparse.Namespace) -> dict[str, MetadataValue]:
    return _merged(
        (key_values(args.tag, "--tag"), "--tag"),
        (key_values(args.tag_json, "--tag-json", json.loads), "--tag-json"),
    )


_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def tls_on(tls: bool | str) -> bool:
    """--tls (True), or IMGSEARCH_TLS as it is set (a text)."""
    if isinstance(tls, bool):
        return tls
    if (value := tls.strip().lower()) in _ON + _OFF:
        return value in _ON
    raise UsageError(f"IMGSEARCH_TLS={tls!r}: use 1, true, yes or on (0, false, no, off or empty: no TLS)")


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS as asked for; a certificate file named while TLS is off is refused, never ignored in silence."""
    if not tls_on(args.tls):
        named = [flag for flag in ("tls_ca", "tls_cert", "tls_key") if getattr(args, flag)]
        if named:
            flag = "--" + named[0].replace("_", "-")
            raise UsageError(f"{flag} is given but TLS is off: add --tls (or set IMGSEARCH_TLS=1)")
        return None
    try:
        return channel_credentials(
            args.tls_ca, args.tls_cert, args.tls_key, ("--tls-ca", "--tls-cert", "--tls-key")
        )
    # A file missing or holding no PEM, a certificate without its key or with another's.
    except ValueError as error:
        raise UsageError(str(error)) from None


def _connection_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"timeout": args.timeout, "token": args.token or None, "credentials": _credentials(args)}


def _search_client(args: argparse.Namespace) -> SearchClient:
    return SearchClient(args.server, collection=args.collection, **_connection_options(args))


def stop_on_signal() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, so that the services started are stopped in order. Asked for once
    they are up: until then Ctrl-C raises, and a start under way ends at once (the services run in sessions
    of their own, out of the terminal's reach)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_up(args: argparse.Namespace) -> int:
    print(
        f"starting the encoder ({args.model} on {args.device}), the search service ({args.milvus_uri}) "
        "and the search page..."
    )
    with local_services(
        args.model,
        args.milvus_uri,
        args.device,
        args.encoder_port,
        args.server_port,
        metrics_ports=(args.encoder_metrics_port, args.search_metrics_port),
        web_port=args.web_port,
    ) as services:
        stop = stop_on_signal()
        print(f"encoder service: {services.encoder}")
        print(f"search service:  {services.search}")
        print(f"search page:     {services.web}/")
        for name, port in zip(("encoder", "search"), services.metrics_ports, strict=True):
            if port >= 0:
                print(f"metrics ({name}): http://127.0.0.1:{port}/metrics")
        print("ready; Ctrl-C stops them all")
        exited = services.wait_for_exit(stop)
        print("stopping...")
    if exited is not None:
        name, code = exited
        print(f"imgsearch: the {name} exited with code {code}; stopped the rest", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _report(summary: IngestSummary, as_json: bool, interrupted: str = "") -> None:
    if as_json:
        print_summary_json(summary, interrupted)
    else:
        print_summary(summary)


def cmd_ingest(args: argparse.Namespace) -> int:
    metadata = tags(args)
    latest: list[IngestSummary] = []  # the ingestion's summary, once an item has finished

    def advance(item: IngestItem, summary: IngestSummary) -> None:
        latest[:] = [summary]
        if bar is not None:
            bar(item, summary)

    with _search_client(args) as client:
        try:
            with progress_bar(not args.no_progress) as bar:
                summary = client.ingest(
                    args.paths, metadata, recursive=not args.no_recursive, progress=advance
                )
        except IngestInterrupted as interrupted:
            _report(interrupted.summary, args.json, str(interrupted))
            raise
        except KeyboardInterrupt:  # the stream is cancelled; what was answered until then is reported
            if latest:
                _report(latest[0], args.json, "interrupted (Ctrl-C)")
            raise
    _report(summary, args.json)
    if not summary.failed:
        return EXIT_OK
    return EXIT_PARTIAL if summary.stored or summary.present else EXIT_FAILED  # as `get`: 1 if none was done


def _described(part: QueryPart) -> str:
    """A part as a grid's title shows it: `text: a dog`, `image: rex.jpg`, `like: 3f2a9c…`, `(weight 2)`."""
    if part.text is not None:
        what = f"text: {part.text}"
    elif part.image is not None:
        what = f"image: {Path(str(part.image)).name}"
    else:
        what = f"like: {str(part.id)[:12]}…"
    return what if part.weight == 1 else f"{what} (weight {part.weight:g})"


def _check_grid_file(grid: str) -> None:
    """Refuses, before the search, a --grid that cannot name a file: the grid's folders are made as needed,
    where no file stands in the way."""
    if not grid:
        raise UsageError("--grid needs the name of the PNG file to write")
    path = Path(grid)
    if path.is_dir():
        raise UsageError(f"--grid {grid} is a folder: name the PNG file to write")
    there = next(folder for folder in path.absolute().parents if folder.exists())
    if not there.is_dir():
        raise UsageError(f"--grid {grid}: {there} is a file, not a folder")


def cmd_search(args: argparse.Namespace) -> int:
    parts = [QueryPart(text=args.text), *args.parts] if args.text else args.parts
    if not parts:
        raise UsageError("search takes a TEXT or --image PATH, --like ID, --text TEXT (see search --help)")
    if args.grid is not None:
        _check_grid_file(args.grid)
    with _search_client(args) as client:
        hits = client.search(
            parts,
            top_k=args.top_k,
            offset=args.offset,
            filter=args.filter,
            filter_params=filter_params(args),
            min_score=args.min_score,
        )
    if args.json:
        print_json(hits)
    else:
        print_hits(hits)
    for pair in _numbers_given_as_text(args.param) if not hits else []:
        print(
            f"imgsearch: no hits; --param {pair} is text to the filter, and text matches no number or "
            f"true/false in metadata: --param-json {pair} gives it a number",
            file=sys.stderr,
        )
    if args.grid is not None:
        title = ", ".join(_described(part) for part in parts)
        try:
            written = write_grid(hits, args.grid, title)
        except OSError as error:
            raise OSError(f"--grid {args.grid} cannot be written: {error.strerror or error}") from None
        print(f"grid: {written}", file=sys.stderr)
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with _search_client(args) as client:
        stats = client.stats()
    if args.json:
        print_json(stats)
    else:
        print(
            f"collection {stats.collection}: {stats.count} pictures, model {stats.model}, "
            f"{stats.dimension}-d {stats.metric_type}, index {stats.index_type}"
        )
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    """The stored records as JSON; an id that is not stored is named on stderr, and changes the exit code."""
    with _search_client(args) as client:
        records = client.get(args.ids)
    print_json(records)
    return _named_not_stored(args.ids, {record.id for record in records})


def _named_not_stored(ids: list[str], stored: set[str]) -> int:
    """Names on stderr each of `ids` that is not `stored`; the exit code: partial when some are, failed when
    none is."""
    missing = [image_id for image_id in dict.fromkeys(ids) if image_id not in stored]
    for image_id in missing:
        print(f"imgsearch: not stored: {shown(image_id)}", file=sys.stderr)
    if not missing:
        return EXIT_OK
    return EXIT_PARTIAL if stored else EXIT_FAILED


def _confirmed(client: SearchClient, args: argparse.Namespace, params: dict[str, Any]) -> bool:
    """On a terminal, says how many pictures a filter would delete and asks first."""
    if args.yes or not args.filter or not sys.stdin.isatty():
        return True
    matching = client.delete(filter=args.filter, filter_params=params, dry_run=True)
    if matching == 0:
        return True
    try:
        values = "".join(f", {key} = {json.dumps(it, ensure_ascii=False)}" for key, it in params.items())
        answer = input(f"delete {matching} pictures that match {shown(args.filter + values)}? [y/N] ")
    except EOFError:  # Ctrl-D: no
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.filter):
        raise UsageError("delete takes --id ID... or --filter EXPR (one of them)")
    params = filter_params(args)
    with _search_client(args) as client:
        if not _confirmed(client, args, params):
            print("nothing deleted")
            return EXIT_FAILED
        if args.filter:
            print(f"deleted {client.delete(filter=args.filter, filter_params=params)}")
            return EXIT_OK
        chunks = (args.id[start : start + _IDS_PER_GET] for start in range(0, len(args.id), _IDS_PER_GET))
        stored = {record.id for chunk in chunks for record in client.get(chunk)}
        print(f"deleted {client.delete(ids=args.id)}")
    return _named_not_stored(args.id, stored)


def cmd_encode(args: argparse.Namespace) -> int:
    if bool(args.text) == bool(args.image):
        raise UsageError("encode takes a TEXT or --image PATH (one of them)")
    with EncoderClient(args.encoder, **_connection_options(args)) as client:
        if args.text:
            vector = client.encode_texts([args.text])[0]
        else:
            [result] = client.encode_images([args.image])
            if result.vector is None:
                raise ImageSearchError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{args.image}: {result.error}",
                    args.encoder,
                    "encoder service",
                )
            vector = result.vector
    if args.json:
        print(json.dumps(vector.tolist()))
    else:
        print(f"{len(vector)}-d vector: [{', '.join(f'{v:.4f}' for v in vector[:6])}, ...]")
    return EXIT_OK
