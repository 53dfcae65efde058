"""The web tier's JSON API over HTTP, in front of a real search service and encoder on loopback.

The small CLIP searches the demo's synthetic pictures, so that text queries have a meaning to check.
"""

import dataclasses
import hashlib
import http.client
import io
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from conftest import lite_process, running_encoder, running_search, search_stub
from PIL import Image
from test_search import ingest, picture

from client import AsyncSearchClient, SearchClient
from client.local import free_port
from demo.run import DEMO_SEED, SMALL_CLIP
from imagesearch.observability import JsonFormatter
from synthetic.evaluation import label_of, write_pictures
from web.config import WebConfig, parse_args
from web.headers import HEADERS
from web.hosts import LOOPBACK, allowed_hosts
from web.server import WebServer

MAX_UPLOAD = 200_000


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        assert self.headers["content-type"] == "application/json", self.body[:200]
        return json.loads(self.body)


def request(
    base: str,
    method: str,
    target: str,
    body: bytes | None = None,
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """`target` is sent exactly as written (no normalising of `..` or of escapes), as an attacker would;
    `host` is the Host header (default: the host and port of `base`)."""
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=60)
    try:
        sent = {**(headers or {}), **({} if host is None else {"Host": host})}
        connection.request(method, target, body=body, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def get(base: str, path: str, **params: object) -> Answer:
    query = urlencode([(k, v) for k, values in params.items() for v in _listed(values)])
    return request(base, "GET", f"{path}?{query}" if query else path)


def _listed(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


@contextmanager
def running_web(search_address: str, **settings: object) -> Iterator[str]:
    config = WebConfig(search=search_address, port=0, log_level="warning", timeout_s=20.0)
    server = WebServer(dataclasses.replace(config, **settings))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclasses.dataclass(frozen=True)
class Demo:
    url: str
    search: str  # the search service's address
    pictures: Path
    ids: dict[str, str]  # file name -> id


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("web-api")
    write_pictures(folder / "pictures", per_class=1, seed=DEMO_SEED)
    with (
        running_encoder(SMALL_CLIP) as encoder,
        running_search(encoder.grpc.address, folder / "milvus.db") as search,
        SearchClient(search.grpc.address) as client,
    ):
        summary = client.ingest([folder / "pictures"])
        assert summary.stored == 48
        ids = {Path(item.uri).name: item.id for item in summary.items}
        with running_web(search.grpc.address, max_upload_bytes=MAX_UPLOAD) as url:
            yield Demo(url, search.grpc.address, folder / "pictures", ids)


def picture_of(demo: Demo, label: str) -> str:
    """The file name of the demo's picture of `label` ("red circle")."""
    return next(name for name in sorted(demo.ids) if label_of(name) == label)


def names(answer: Answer) -> list[str]:
    assert answer.status == 200, answer.body
    return [hit["name"] for hit in answer.json()["hits"]]


def test_status_says_how_many_pictures_and_which_model(demo) -> None:
    status = get(demo.url, "/api/status").json()
    assert status["count"] == 48 and status["model"].startswith("small-clip-synthetic.pt@sha256:")


def test_text_search_finds_the_described_pictures(demo) -> None:
    answer = get(demo.url, "/api/search", q="a red circle", top_k=5)
    body = answer.json()
    assert label_of(body["hits"][0]["name"]) == "red circle"
    scores = [hit["score"] for hit in body["hits"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    first = body["hits"][0]
    assert first["uri"] == str(demo.pictures / first["name"]) and first["id"] == demo.ids[first["name"]]
    assert first["thumbnail"] == f"/thumbnails/{first['id']}"
    assert body["top_k"] == 5 and body["offset"] == 0 and body["took_ms"] > 0


def test_a_picture_upload_finds_itself_first(demo) -> None:
    """Also as `curl --data-binary @photo.jpg` (the README's command) sends it, labelled as a urlencoded form:
    it was refused with 415, whose words advised that same command."""
    name = picture_of(demo, "blue square")
    picture = (demo.pictures / name).read_bytes()
    for content_type in ("image/png", "application/x-www-form-urlencoded"):
        answer = request(
            demo.url, "POST", "/api/search?top_k=3", picture, headers={"Content-Type": content_type}
        )
        assert answer.status == 200, (content_type, answer.json())
        assert answer.json()["hits"][0]["id"] == hashlib.sha256(picture).hexdigest()
        assert answer.json()["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_uploads_are_limited_and_checked_like_any_picture(demo) -> None:
    too_large = request(demo.url, "POST", "/api/search", b"\xff\xd8\xff" + bytes(MAX_UPLOAD))
    assert too_large.status == 413
    assert f"over the limit of {MAX_UPLOAD} bytes" in too_large.json()["error"]
    not_a_picture = request(demo.url, "POST", "/api/search", b"just some text")
    assert not_a_picture.status == 400
    assert "image: not a recognised image format" in not_a_picture.json()["error"]
    empty = request(demo.url, "POST", "/api/search", b"")
    assert empty.status == 400 and "no picture" in empty.json()["error"]
    # As `curl -F picture=@photo.jpg` sends it: it was "not a recognised image format"
    form = b'--b\r\nContent-Disposition: form-data; name="picture"\r\n\r\n\xff\xd8\xff\r\n--b--\r\n'
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    as_form = request(demo.url, "POST", "/api/search", form, headers=headers)
    assert as_form.status == 415 and "POST its bytes as the whole request body" in as_form.json()["error"]


def test_an_upload_without_a_length_is_refused_once_it_is_over_the_limit(demo) -> None:
    """Sent chunked, a body declares no length: only counting what arrives keeps it from being read whole."""
    chunk = 64 * 1024
    sizes = [chunk] * (MAX_UPLOAD // chunk) + [MAX_UPLOAD % chunk + 1]
    chunks = (b"\xff" * size for size in sizes)  # a generator: http.client sends it chunked
    answer = request(demo.url, "POST", "/api/search", chunks)  # type: ignore[arg-type]
    assert (
        answer.status == 413
        and answer.json()["error"] == f"the picture is over the limit of {MAX_UPLOAD} bytes"
    )


def test_more_like_this_uses_the_stored_picture(demo) -> None:
    name = picture_of(demo, "green star")
    body = get(demo.url, "/api/search", like=demo.ids[name], top_k=4).json()
    assert body["hits"][0]["name"] == name
    assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [label_of(hit["name"]) for hit in body["hits"]].count("green star") >= 1
    unknown = get(demo.url, "/api/search", like="0" * 64)
    assert unknown.status == 404 and "is not stored" in unknown.json()["error"]
    malformed = get(demo.url, "/api/search", like="../../etc/passwd")
    assert malformed.status == 400 and "is not an id" in malformed.json()["error"]


def test_mixed_queries_combine_weighted_parts(demo) -> None:
    alone = get(demo.url, "/api/search", q="a red circle", top_k=8).json()["hits"]
    doubled = get(demo.url, "/api/search", q="a red circle", part="text:1:a red circle", top_k=8).json()
    assert [hit["id"] for hit in doubled["hits"]] == [hit["id"] for hit in alone]
    assert [hit["score"] for hit in doubled["hits"]] == pytest.approx(
        [hit["score"] for hit in alone], abs=1e-5
    )

    red_circle = demo.ids[picture_of(demo, "red circle")]
    like = names(get(demo.url, "/api/search", like=red_circle, top_k=5))
    away_from_red = names(
        get(demo.url, "/api/search", like=red_circle, part="text:-1:a red picture", top_k=5)
    )
    assert sum(name.startswith("red-") for name in away_from_red) < sum(
        name.startswith("red-") for name in like
    )

    cancelled = get(demo.url, "/api/search", q="a dog", part="text:-1:a dog")
    assert cancelled.status == 400 and "cancel out" in cancelled.json()["error"]
    for spec, complaint in (
        ("text:nan:a dog", "parts[0].weight = nan is not a finite number"),
        ("text:two:a dog", "part[0] weight = 'two' is not a number"),
        ("image:1:/etc/passwd", "is not KIND:WEIGHT:VALUE with KIND text or id"),
    ):
        refused = get(demo.url, "/api/search", part=spec)
        assert refused.status == 400 and complaint in refused.json()["error"], spec
    nothing = get(demo.url, "/api/search")
    assert nothing.status == 400 and "nothing to search for" in nothing.json()["error"]


def test_min_score_leaves_out_weaker_hits(demo) -> None:
    everything = get(demo.url, "/api/search", q="a yellow triangle", top_k=20).json()["hits"]
    cut = everything[3]["score"]
    kept = get(demo.url, "/api/search", q="a yellow triangle", top_k=20, min_score=cut).json()["hits"]
    assert [hit["id"] for hit in kept] == [hit["id"] for hit in everything if hit["score"] >= cut]
    assert 4 <= len(kept) < 20
    for bad, complaint in (("2", "min_score = 2.0 is outside -1..1"), ("high", "min_score = 'high' is not")):
        refused = get(demo.url, "/api/search", q="a dog", min_score=bad)
        assert refused.status == 400 and complaint in refused.json()["error"]


def test_offset_and_top_k_page_through_the_same_ranking(demo) -> None:
    def page(offset: int) -> list[str]:
        return [
            hit["id"]
            for hit in get(demo.url, "/api/search", q="a shape", top_k=5, offset=offset).json()["hits"]
        ]

    whole = [hit["id"] for hit in get(demo.url, "/api/search", q="a shape", top_k=15).json()["hits"]]
    assert page(0) + page(5) + page(10) == whole
    assert get(demo.url, "/api/search", q="a shape", top_k=-1).status == 400


def test_a_hit_is_named_by_the_last_part_of_its_path_on_the_ingesting_machine(tiny_encoder, tmp_path) -> None:
    named = {
        "/pics/back\\slash.png": "back\\slash.png",  # a POSIX name may hold a backslash
        "C:\\photos\\from windows.png": "from windows.png",
        "/pics/plain.png": "plain.png",
    }
    with running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search:
        with search_stub(search.grpc.address) as stub:
            stored = ingest(stub, [(uri, picture(seed)) for seed, uri in enumerate(named)])
        with running_web(search.grpc.address) as url:
            for item in stored:
                hit = get(url, "/api/search", like=item.id, top_k=1).json()["hits"][0]
                assert (hit["uri"], hit["name"]) == (item.uri, named[item.uri])


def test_a_page_size_over_the_services_max_top_k_is_cut_to_it_with_a_warning(
    tiny_encoder, tmp_path, caplog
) -> None:
    """Every page search (which names no top_k) failed with 400 "top_k = 50 is outside 1..20"."""
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", max_top_k=20) as search,
        running_web(search.grpc.address, page_size=50) as url,
        caplog.at_level(logging.WARNING, logger="web.app"),
    ):
        with search_stub(search.grpc.address) as stub:
            ingest(stub, [(f"/pics/{seed}.png", picture(seed)) for seed in range(3)])
        answer = get(url, "/api/search", q="anything")
        assert answer.status == 200 and answer.json()["top_k"] == 20 and len(answer.json()["hits"]) == 3
    assert "--page-size 50 is over the search service's max_top_k: pages hold 20 hits" in caplog.text


def test_thumbnails_are_small_jpegs_of_stored_pictures(demo) -> None:
    name = picture_of(demo, "orange hexagon")
    answer = get(demo.url, f"/thumbnails/{demo.ids[name]}")
    assert answer.status == 200 and answer.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(answer.body))
    original = Image.open(demo.pictures / name)
    assert thumbnail.format == "JPEG" and max(thumbnail.size) == min(256, max(original.size))
    unknown = get(demo.url, f"/thumbnails/{'a' * 64}")
    assert unknown.status == 404 and "no thumbnail" in unknown.json()["error"]


NOT_IDS = [
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "g" * 64,
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..%2f" + "a" * 64,
    "%2e%2e",
    "../../../etc/passwd",
    "..\\..\\windows",
    "a" * 64 + "%00",
    "a" * 64 + ".jpg",
]


@pytest.mark.parametrize("not_an_id", NOT_IDS)
def test_anything_but_an_id_is_404_without_asking_the_service(not_an_id: str) -> None:
    # No search service listens: an id would get 503. A 404 shows that the service was never asked.
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        answer = request(url, "GET", f"/thumbnails/{not_an_id}")
        assert answer.status == 404
        assert set(answer.json()) == {"error"}


def test_a_well_formed_id_does_reach_the_service() -> None:
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        assert request(url, "GET", f"/thumbnails/{'a' * 64}").status == 503


def test_a_method_a_route_does_not_take_is_405_naming_those_it_does() -> None:
    """The 405 lacked its Allow header: the JSON error handler dropped Starlette's headers."""
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        answer = request(url, "DELETE", "/api/search")
    assert answer.status == 405 and set(answer.json()) == {"error"}
    assert set(answer.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


UNAVAILABLE = (
    "{} is unavailable (UNAVAILABLE); the web tier's log has its words under this answer's x-request-id"
)


def test_an_unreachable_search_service_is_503_naming_it_but_not_its_address(caplog) -> None:
    """Its words, which name its address, went to whoever opened the page; they are logged instead."""
    address = f"127.0.0.1:{free_port()}"
    with running_web(address, timeout_s=5.0) as url, caplog.at_level(logging.WARNING, logger="web.errors"):
        for answer in (get(url, "/api/status"), get(url, "/api/search", q="a dog")):
            assert answer.status == 503
            assert answer.json()["error"] == UNAVAILABLE.format("the search service")
            [logged] = [r for r in caplog.records if r.fields["request_id"] == answer.headers["x-request-id"]]
            assert f"cannot reach the search service at {address}" in logged.getMessage()


def test_a_malformed_search_is_400_naming_its_parameter_even_with_the_service_unreachable() -> None:
    """The page asked the service its limits first: a malformed search was 503 while the service was down."""
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        answers = [
            get(url, "/api/search", q="a dog", top_k="ten"),
            get(url, "/api/search", q="a dog", top_k=""),
            get(url, "/api/search", top_k="5"),
        ]
    assert [answer.status for answer in answers] == [400, 400, 400]
    assert answers[0].json()["error"] == "top_k = 'ten' is not an integer"
    assert answers[1].json()["error"] == "top_k = '' is not an integer"
    assert answers[2].json()["error"].startswith("nothing to search for")


def test_a_parameter_that_is_not_utf8_text_is_400_naming_it() -> None:
    """Starlette put U+FFFD in place of each bad byte: `q=%FF%FE` searched for that, and found hits."""
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        bad = request(url, "GET", "/api/search?top_k=1&q=%FF%FE")
        bad_name = request(url, "GET", "/api/search?q=a&%E9=1")
        good = request(url, "GET", "/api/search?q=caf%C3%A9+%E6%97%A5")  # then the unreachable service: 503
    assert (bad.status, bad.json()["error"]) == (400, "q is not UTF-8 text: percent-encode its UTF-8 bytes")
    assert bad_name.json()["error"] == "\\xe9 is not UTF-8 text: percent-encode its UTF-8 bytes"
    assert good.status == 503


def test_a_whole_number_is_ascii_digits_only() -> None:
    """int() took top_k=1_0 as 10, and " 10", "+10" or other scripts' digits as numbers too."""
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        for name in ("top_k", "offset"):
            for written in ("1_0", " 10", "+10", "\u0661\u0660", "10.0", "9" * 5000):
                answer = get(url, "/api/search", q="a dog", **{name: written})
                assert answer.status == 400, (name, written)
                assert answer.json()["error"] == f"{name} = {written!r} is not an integer"


def test_a_decimal_is_ascii_digits_too() -> None:
    """float() took a weight of 1_0 as 10, and " 0.5" or other scripts' digits as numbers too."""
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        for written in ("1_0", " 0.5", "0.5 ", "\u0661.5", "0x1", "1e"):
            answer = get(url, "/api/search", part=f"text:{written}:a dog")
            assert answer.status == 400, written
            assert answer.json()["error"] == f"part[0] weight = {written!r} is not a number"
            answer = get(url, "/api/search", q="a dog", min_score=written)
            assert answer.status == 400, written
            assert answer.json()["error"] == f"min_score = {written!r} is not a number"


@contextmanager
def stalled_upload(url: str, declared: int = 1000) -> Iterator[socket.socket]:
    """A picture upload that sends 10 of its `declared` bytes and then nothing more."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        head = f"POST /api/search HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n\r\n"
        connection.sendall(head.encode() + b"\xff" * 10)
        yield connection


def test_an_upload_that_stalls_is_408_and_frees_its_place() -> None:
    """A client that stopped part-way through its picture held the upload, and its memory, for good; after
    the 408 the connection closes, rather than wait for the rest of the body."""
    with running_web(f"127.0.0.1:{free_port()}", upload_timeout_s=1.0, max_concurrent_uploads=1) as url:
        with stalled_upload(url) as connection:
            received = []
            while chunk := connection.recv(65536):  # to the end: the server closes the connection
                received.append(chunk)
        answer = b"".join(received).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 408 ") and "\r\nconnection: close\r\n" in answer.lower()
        assert '"the picture did not arrive within 1 s (--upload-timeout-s)"' in answer
        assert request(url, "POST", "/api/search", b"").status == 400  # its place is free again


def test_uploads_beyond_the_limit_at_once_are_503_naming_it() -> None:
    refusal = "1 searches by picture are under way already (--max-concurrent-uploads); retry later"
    with (
        running_web(f"127.0.0.1:{free_port()}", max_concurrent_uploads=1) as url,
        stalled_upload(url),
    ):
        for _ in range(100):  # until the stalled upload has its place: a bounded poll of that condition
            answer = request(url, "POST", "/api/search", b"\xff" * 10)
            if answer.json()["error"] == refusal:
                break
    assert answer.status == 503 and answer.json()["error"] == refusal


def test_an_unreachable_encoder_is_503_naming_the_encoder_but_not_its_address(tiny_path, tmp_path) -> None:
    encoder = f"127.0.0.1:{free_port()}"
    picture = tmp_path / "one.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(picture)
    with (
        running_search(encoder, tmp_path / "milvus.db") as search,
        running_web(search.grpc.address) as url,
    ):
        with (
            running_encoder(tiny_path, port=int(encoder.rsplit(":", 1)[1])),
            SearchClient(search.grpc.address) as client,
        ):
            client.ingest([picture])
        answer = get(url, "/api/search", q="a dog")
    assert answer.status == 503 and answer.json()["error"] == UNAVAILABLE.format("the encoder")


def test_a_stalled_milvus_is_504_naming_it_but_not_its_file(tiny_encoder, tmp_path) -> None:
    """The search service answers just before this tier's deadline, naming Milvus: it answered at the same
    moment as that deadline, which blamed the search service."""
    db_file = tmp_path / "milvus.db"
    with (
        running_search(tiny_encoder.grpc.address, db_file) as search,
        running_web(search.grpc.address, timeout_s=3.0) as url,
    ):
        with search_stub(search.grpc.address) as stub:
            ingest(stub, [("/pics/1.png", picture(1))])
        lite = lite_process(db_file)
        os.kill(lite, signal.SIGSTOP)  # Milvus stalls: it answers nothing
        try:
            answer = get(url, "/api/status")
        finally:
            os.kill(lite, signal.SIGCONT)
    assert answer.status == 504
    assert answer.json()["error"] == (
        "the search service's Milvus did not answer in time (DEADLINE_EXCEEDED); the web tier's log has its "
        "words under this answer's x-request-id"
    )


def test_the_tier_is_read_only_and_keeps_the_page_to_its_own_origin(demo) -> None:
    for method, path in (("POST", "/api/status"), ("DELETE", "/api/search"), ("POST", "/api/ingest")):
        answer = request(demo.url, method, path, b"")
        assert answer.status in (404, 405) and "error" in answer.json()
    page = request(demo.url, "GET", "/")
    assert page.status == 200 and b'id="results"' in page.body
    assert "default-src 'self'" in page.headers["content-security-policy"]
    static = Path(__file__).resolve().parent.parent / "web" / "static"
    for path in static.iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
        assert request(demo.url, "GET", f"/static/{path.name}").status == 200


def test_an_unexpected_failure_is_500_and_keeps_the_page_to_its_own_origin(monkeypatch) -> None:
    async def failing_stats(client: AsyncSearchClient) -> None:
        raise RuntimeError("a defect behind the web tier")

    monkeypatch.setattr(AsyncSearchClient, "stats", failing_stats)
    with running_web(f"127.0.0.1:{free_port()}", timeout_s=5.0) as url:
        answer = get(url, "/api/status")
    assert answer.status == 500
    assert answer.json() == {"error": "the web tier failed: RuntimeError"}
    assert {name: answer.headers[name] for name in HEADERS} == HEADERS


def test_the_tier_sends_its_bearer_token_to_the_search_service(tiny_encoder, tmp_path) -> None:
    picture = tmp_path / "one.png"
    Image.new("RGB", (32, 24), (30, 30, 200)).save(picture)
    with running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", auth_tokens="s3cret") as search:
        with SearchClient(search.grpc.address, token="s3cret") as client:
            client.ingest([picture])
        with running_web(search.grpc.address, search_token="s3cret") as url:
            assert get(url, "/api/status").json()["count"] == 1
        with running_web(search.grpc.address) as url:
            refused = get(url, "/api/status")
    assert refused.status == 502 and "token" in refused.json()["error"].lower()


REFUSED_HOST = "the host {!r} is not allowed: add it to --allowed-hosts (WEB_ALLOWED_HOSTS)"


def test_a_page_that_rebinds_its_name_to_this_machine_reads_nothing(demo) -> None:
    """DNS rebinding: another site's page points its name at 127.0.0.1 and asks with that name as Host."""
    port = urlsplit(demo.url).port
    picture_id = demo.ids[picture_of(demo, "red circle")]
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io", ""):
        for target in ("/", "/api/search?q=a+red+circle", "/api/status", f"/thumbnails/{picture_id}"):
            refused = request(demo.url, "GET", target, host=host)
            assert refused.status == 400, (host, target)
            assert refused.json() == {"error": REFUSED_HOST.format(host)}
            assert {name: refused.headers[name] for name in HEADERS} == HEADERS
    # The kubelet's probes name the pod's address, in no setting: /healthz answers them, and reveals nothing.
    probed = request(demo.url, "GET", "/healthz", host=f"10.244.1.17:{port}")
    assert probed.status == 200 and probed.json() == {"ok": True}


def test_this_machines_names_and_the_allowed_ones_reach_the_page(demo) -> None:
    port = urlsplit(demo.url).port
    for name in (*LOOPBACK, "LocalHost"):
        for host in (name, f"{name}:{port}"):
            assert names(request(demo.url, "GET", "/api/search?q=a+red+circle", host=host)), host
            assert request(demo.url, "GET", "/", host=host).status == 200, host
    with running_web(demo.search, allowed_hosts="photos.example.lan, 192.168.1.20,fd00::7") as url:
        for host in ("photos.example.lan", "Photos.Example.LAN:8080", "192.168.1.20:8080", "[fd00::7]:8080"):
            assert names(request(url, "GET", "/api/search?q=a+red+circle", host=host)), host
        assert request(url, "GET", "/", host=f"localhost:{port}").status == 200  # still, besides those
        assert request(url, "GET", "/", host="photos.example.lan.attacker.example").status == 400
    with running_web(demo.search, allowed_hosts="*") as url:
        assert names(request(url, "GET", "/api/search?q=a+red+circle", host="attacker.example"))


def test_allowed_hosts_come_from_the_flag_or_its_variable_and_are_host_names(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WEB_ALLOWED_HOSTS", "")  # what docker compose passes when .env names none
    assert allowed_hosts(parse_args([]).allowed_hosts) == set(LOOPBACK)
    monkeypatch.setenv("WEB_ALLOWED_HOSTS", "Photos.Example.lan,::1")
    assert allowed_hosts(parse_args([]).allowed_hosts) == {*LOOPBACK, "photos.example.lan"}
    assert parse_args(["--allowed-hosts", "photos.lan"]).allowed_hosts == "photos.lan"
    for bad in ("photos.lan:8080", "http://photos.lan", "*.example.com"):
        with pytest.raises(SystemExit):
            parse_args(["--allowed-hosts", bad])
        assert f"allowed_hosts: {bad!r} is not a host name" in capsys.readouterr().err


def test_the_access_log_is_one_short_line_without_the_search_and_with_the_calls_request_id(
    demo, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="web.access")
    caplog.set_level(logging.INFO, logger="imagesearch.access")
    query = urlencode({"q": "a red circle " + "private words " * 1500, "top_k": 3})
    assert len(query) > 20_000
    # Stopping the tier waits for its requests to finish: their lines are written by then.
    with running_web(demo.search) as url:
        answer = request(url, "GET", f"/api/search?{query}")
    assert len(names(answer)) == 3
    [access] = [record for record in caplog.records if record.name == "web.access"]
    line = JsonFormatter().format(access)
    assert len(line.encode()) < 1024 and "private" not in line and "red" not in line
    logged = json.loads(line)
    expected = {"method": "GET", "path": "/api/search", "query_bytes": len(query), "status": 200}
    assert {key: logged[key] for key in expected} == expected and logged["ms"] > 0
    assert logged["request_id"] == answer.headers["x-request-id"]
    searched = [
        record.fields["request_id"]
        for record in caplog.records
        if record.name == "imagesearch.access" and record.fields["method"] == "Search"
    ]
    assert searched == [answer.headers["x-request-id"]]


def test_a_proxys_request_id_is_kept_when_it_is_a_safe_one(demo, caplog) -> None:
    caplog.set_level(logging.INFO, logger="imagesearch.access")
    kept_or_not = {"proxy-7f3a.2": True, "bad id; drop": False, "x" * 129: False}
    with running_web(demo.search) as url:
        for sent, kept in kept_or_not.items():
            answer = request(url, "GET", "/api/search?q=a+red+circle", headers={"X-Request-ID": sent})
            assert answer.status == 200 and (answer.headers["x-request-id"] == sent) == kept
            [searched] = [
                record.fields["request_id"]
                for record in caplog.records
                if record.name == "imagesearch.access" and record.fields["method"] == "Search"
            ]
            assert searched == answer.headers["x-request-id"]
            caplog.clear()
