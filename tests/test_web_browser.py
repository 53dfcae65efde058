"""The search page in a real headless Chromium (Debian's, driven by Playwright) on the demo collection.

Skips where no Chromium is found; fails instead when CI is set, since .ci/run installs one.
"""

import base64
import hashlib
import io
import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import running_encoder, running_search, search_stub
from PIL import Image
from test_search import ingest, picture
from test_web_api import running_web

from client import SearchClient
from client.local import free_port
from client.output import shown as shown_by_the_cli
from demo.run import COLLECTION, DEMO_SEED, SMALL_CLIP
from encoder_service.images import ImageLimits, UnencodableImage, open_checked
from imagesearch.errors import ServiceError
from imagesearch.pictures import NOT_A_PICTURE
from search_service.store import CollectionInfo
from synthetic.evaluation import label_of, write_pictures

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "web.png"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium's own connections are refused on a closed network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM:
        return "no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/chromium"
    return None


if (_reason := _missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests must run in CI: {_reason}", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("web-browser") / "pictures"
    write_pictures(folder, per_class=2, seed=DEMO_SEED)
    return folder


@pytest.fixture(scope="module")
def demo_search(pictures: Path) -> Iterator[str]:
    """The demo collection (small CLIP, unseen synthetic pictures) in a search service: its address."""
    with (
        running_encoder(SMALL_CLIP) as encoder,
        running_search(encoder.grpc.address, pictures.parent / "milvus.db") as search,
        SearchClient(search.grpc.address, collection=COLLECTION) as client,
    ):
        assert client.ingest([pictures]).stored == 96
        yield search.grpc.address


@pytest.fixture(scope="module")
def site(demo_search: str) -> Iterator[str]:
    """The demo collection behind the web tier."""
    with running_web(demo_search, collection=COLLECTION) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Playwright gives each launch a fresh temporary profile."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def search_for(page: Page, text: str) -> None:
    box = page.get_by_label("Describe the pictures to find")
    box.fill(text)
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"\?q="))
    expect(page.locator(".hit").first).to_be_visible()


def shown(page: Page) -> list[tuple[str, str, float]]:
    """(id, file name, score) of each result, in order."""
    cards = page.locator(".hit")
    return [
        (
            card.get_attribute("data-id") or "",
            card.locator(".name").inner_text(),
            float(card.locator(".score").inner_text()),
        )
        for card in cards.all()
    ]


def url_query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def search_by_file(page: Page, path: Path) -> None:
    """Chooses `path` as the picture to search by, and waits for its answer."""
    page.set_input_files("#picture-input", str(path))
    expect(page.locator("#parts")).to_contain_text(path.name)
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")


def noise_png(path: Path, side: int) -> Path:
    """Random pixels barely compress: the PNG holds about 3 * side² bytes."""
    pixels = random.Random(path.name).randbytes(3 * side * side)
    Image.frombytes("RGB", (side, side), pixels).save(path)
    return path


def wait_for_thumbnails(page: Page, count: int) -> None:
    """A bounded poll until the first `count` thumbnails have loaded (the screenshot shows them)."""
    loaded = (
        "(images, count) => images.slice(0, count).every(image => image.complete && image.naturalWidth > 0)"
    )
    for _ in range(200):
        if page.locator(".hit img").evaluate_all(loaded, count):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"the first {count} thumbnails did not load")


def hold_searches(page: Page) -> list[Route]:
    """Every /api/search call from now on waits until `release` lets it go."""
    held: list[Route] = []
    page.route(re.compile(r"/api/search\?"), lambda route: held.append(route))
    return held


def release(page: Page, held: list[Route], count: int) -> None:
    """A bounded poll until `count` calls are held (the page has sent them), then lets them all go."""
    for _ in range(200):
        if len(held) >= count:
            break
        page.wait_for_timeout(25)
    assert len(held) == count, held
    for route in held:
        route.continue_()
    page.unroute(re.compile(r"/api/search\?"))


# The WCAG contrast ratio of an element's colour `property` against the first opaque background behind it:
# its own for its text, its parent's for its outline or border (what lies next to them).
CONTRAST = """(element, property) => {
    const channels = (color) => color.match(/[\\d.]+/g).map(Number);
    let node = property === "color" ? element : element.parentElement;
    while (node && (channels(getComputedStyle(node).backgroundColor)[3] ?? 1) < 1) node = node.parentElement;
    const background = node ? channels(getComputedStyle(node).backgroundColor) : [255, 255, 255];
    const luminance = (rgb) => {
        const [r, g, b] = rgb.slice(0, 3).map((c) => c / 255).map(
            (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const [high, low] = [luminance(channels(getComputedStyle(element)[property])), luminance(background)]
        .sort((a, b) => b - a);
    return (high + 0.05) / (low + 0.05);
}"""


def test_a_text_query_shows_a_grid_of_thumbnails_and_loads_more(site: str, page: Page) -> None:
    page.goto(site)
    expect(page.locator("#status")).to_contain_text("96 pictures in “demo”")
    search_for(page, "a red circle")
    expect(page.locator(".hit")).to_have_count(24)
    results = shown(page)
    assert [label_of(name) for _, name, _ in results[:2]] == ["red circle", "red circle"]
    assert [score for _, _, score in results] == sorted((score for _, _, score in results), reverse=True)
    assert url_query(page) == {"q": ["a red circle"]}
    expect(page.locator("#status")).to_contain_text(re.compile(r"24 hits · [\d.]+ ms"))
    wait_for_thumbnails(page, 12)
    page.get_by_label("Describe the pictures to find").blur()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    page.get_by_role("button", name="Load more").click()
    expect(page.locator(".hit")).to_have_count(48)
    assert [item[0] for item in shown(page)[:24]] == [item[0] for item in results]


def test_the_page_shows_as_many_hits_at_a_time_as_its_web_tier_says(demo_search: str, page: Page) -> None:
    """The page asked for 24 whatever --page-size said."""
    with running_web(demo_search, collection=COLLECTION, page_size=10) as url:
        page.goto(url)
        search_for(page, "a red circle")
        expect(page.locator(".hit")).to_have_count(10)
        page.get_by_role("button", name="Load more").click()
        expect(page.locator(".hit")).to_have_count(20)


def test_more_like_this_then_back_then_reload(site: str, page: Page) -> None:
    page.goto(site)
    search_for(page, "a blue square")
    text_results = shown(page)
    first_id, first_name, _ = text_results[0]
    page.get_by_role("button", name=f"More like {first_name}").click()
    expect(page).to_have_url(re.compile(f"like={first_id}"))
    expect(page.locator(".hit").first).to_have_attribute("data-id", first_id)
    # The text query's grid also starts with that picture: its score tells the new grid from the old.
    expect(page.locator(".hit .score").first).to_have_text("1.000")
    assert shown(page)[0][2] == pytest.approx(1.0, abs=1e-3)
    similar = shown(page)
    expect(page.locator("#query-parts")).to_be_visible()
    # The part is the picture, by its name and its thumbnail, not by the start of its id.
    expect(page.locator("#parts .label")).to_have_text(first_name)
    expect(page.locator("#parts img")).to_have_attribute("src", f"/thumbnails/{first_id}")
    page.wait_for_function("() => document.querySelector('#parts img').naturalWidth > 0")

    page.reload()
    expect(page.locator(".hit").first).to_have_attribute("data-id", first_id)
    assert shown(page) == similar
    page.wait_for_function("() => document.querySelector('#parts img').naturalWidth > 0")

    page.go_back()
    expect(page).to_have_url(re.compile(r"\?q=a\+blue\+square$"))
    expect(page.get_by_label("Describe the pictures to find")).to_have_value("a blue square")
    expect(page.locator(".hit").first).to_have_attribute("data-id", first_id)
    expect(page.locator(".hit .score").first).to_have_text(f"{text_results[0][2]:.3f}")
    assert [item[0] for item in shown(page)] == [item[0] for item in text_results]


def test_the_minimum_score_slider_cuts_weak_hits_and_stays_in_the_link(site: str, page: Page) -> None:
    page.goto(site)
    search_for(page, "a yellow star")
    scores = [score for _, _, score in shown(page)]
    cut = round(scores[5] - 0.005, 2)
    page.get_by_label("Minimum score").fill(str(cut))
    expect(page).to_have_url(re.compile(f"min_score={cut:.2f}"))
    expect(page.locator(".hit")).to_have_count(sum(score >= cut for score in scores))
    kept = shown(page)
    assert 6 <= len(kept) < 24 and all(score >= cut for _, _, score in kept)
    expect(page.locator("#min-score-value")).to_have_text(f"{cut:.2f}")

    page.reload()
    expect(page.get_by_label("Minimum score")).to_have_value(str(cut))
    expect(page.locator(".hit")).to_have_count(len(kept))
    assert shown(page) == kept


def test_subtracting_a_text_makes_a_mixed_query(site: str, page: Page) -> None:
    def red(results: list[tuple[str, str, float]]) -> int:
        return sum(name.startswith("red-") for _, name, _ in results)

    page.goto(site)
    search_for(page, "a red circle")
    before = shown(page)
    page.get_by_label("Describe the pictures to find").fill("red")
    page.get_by_role("button", name="Subtract").click()
    expect(page).to_have_url(re.compile(r"part=text%3A-1%3Ared"))
    expect(page.locator("#parts li")).to_have_count(2)
    expect(page.get_by_label("Weight of red (negative: away from it)")).to_have_value("-1")
    expect(page.locator(".hit").first).not_to_have_attribute("data-id", before[0][0])
    assert red(shown(page)) < red(before)


def test_search_by_an_uploaded_dropped_or_pasted_picture(site: str, pictures: Path, page: Page) -> None:
    path = next(path for path in sorted(pictures.iterdir()) if label_of(path.name) == "green triangle")
    picture_id = hashlib.sha256(path.read_bytes()).hexdigest()
    page.goto(site)
    page.set_input_files("#picture-input", str(path))
    expect(page.locator(".hit").first).to_have_attribute("data-id", picture_id)
    expect(page.locator("#parts")).to_contain_text(path.name)
    page.reload()  # the picture stays with the tab, so its link still works here
    expect(page.locator(".hit").first).to_have_attribute("data-id", picture_id)

    other = next(path for path in sorted(pictures.iterdir()) if label_of(path.name) == "purple cross")
    other_id = hashlib.sha256(other.read_bytes()).hexdigest()
    transfer = page.evaluate_handle(
        """([data, name]) => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        [base64.b64encode(other.read_bytes()).decode(), other.name],
    )
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})
    expect(page.locator(".hit").first).to_have_attribute("data-id", other_id)

    page.go_back()
    expect(page.locator(".hit").first).to_have_attribute("data-id", picture_id)
    page.evaluate(
        "(transfer) => document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer }))",
        transfer,
    )
    expect(page.locator(".hit").first).to_have_attribute("data-id", other_id)


def test_a_banner_says_when_the_search_service_cannot_be_reached(page: Page) -> None:
    """The banner showed the API's error, the service's address and gRPC's words in it ("cannot reach the
    search service at 127.0.0.1:…: … last error: UNKNOWN: …"); on a narrow screen it touched both edges."""
    address = f"127.0.0.1:{free_port()}"
    with running_web(address, timeout_s=5.0) as url:
        page.goto(f"{url}/?q=a+red+circle")
        banner = page.get_by_role("alert")
        expect(banner).to_have_text("The search service is unavailable — try again shortly.")
        expect(page.locator(".hit")).to_have_count(0)
        page.set_viewport_size({"width": 375, "height": 800})
        box = banner.bounding_box()
        assert box is not None and box["x"] >= 16 and box["x"] + box["width"] <= 375 - 16, box


def test_a_failed_load_more_keeps_its_button_to_try_again(site: str, page: Page) -> None:
    """The button went with the failure: the hits shown could not be added to once the service was back."""
    page.goto(f"{site}/?q=a+red+circle")
    expect(page.locator(".hit")).to_have_count(24)
    searches = re.compile(r"/api/search\?")
    said = "the search service is unavailable (UNAVAILABLE)"
    gone = {"error": f"{said}; the web tier's log has its words under this answer's x-request-id"}
    page.route(searches, lambda route: route.fulfill(status=503, json=gone))
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(page.get_by_role("alert")).to_have_text("The search service is unavailable — try again shortly.")
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")
    expect(more).to_be_visible()
    expect(page.locator(".hit")).to_have_count(24)

    page.unroute(searches)
    more.click()
    expect(page.locator(".hit")).to_have_count(48)
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.locator("#status")).to_contain_text("48 hits")


def test_a_picture_without_a_thumbnail_gets_a_placeholder(site: str, pictures: Path, page: Page) -> None:
    path = next(path for path in sorted(pictures.iterdir()) if label_of(path.name) == "black cross")
    picture_id = hashlib.sha256(path.read_bytes()).hexdigest()
    # As for a picture ingested before thumbnails existed: the default folder is beside the Milvus Lite file.
    (pictures.parent / "milvus.db.thumbnails" / COLLECTION / f"{picture_id}.jpg").unlink()
    page.goto(f"{site}/?like={picture_id}")
    first = page.locator(".hit").first
    expect(first).to_have_attribute("data-id", picture_id)
    expect(first.get_by_role("img", name="no thumbnail")).to_be_visible()
    expect(first.locator(".name")).to_have_text(path.name)
    expect(page.locator(".hit").nth(1).locator("img.thumb")).to_be_visible()


def test_the_newest_uploaded_pictures_survive_a_reload(site: str, page: Page, tmp_path: Path) -> None:
    # Chromium keeps about 5 MB of text per tab, a picture as base64 (4/3 of its size): 2.2 MB fits once.
    first, second = noise_png(tmp_path / "first.png", 860), noise_png(tmp_path / "second.png", 860)
    page.goto(site)
    search_by_file(page, first)
    search_by_file(page, second)
    expect(page.locator(".hit")).to_have_count(24)
    second_hits = shown(page)
    page.reload()
    expect(page.locator("#parts")).to_contain_text(second.name)
    expect(page.locator(".hit")).to_have_count(24)
    assert shown(page) == second_hits
    expect(page.locator("#message")).to_be_hidden()
    expect(page.locator("#parts .note")).to_have_count(0)

    page.go_back()  # the first picture made room for the second
    expect(page.locator("#message")).to_have_text(re.compile("not in this browser any more"))
    expect(page.locator(".hit")).to_have_count(0)
    page.go_forward()
    expect(page.locator("#parts")).to_contain_text(second.name)


def test_a_picture_too_large_to_keep_says_so_and_keeps_the_others(
    site: str, page: Page, tmp_path: Path
) -> None:
    kept, too_large = noise_png(tmp_path / "kept.png", 600), noise_png(tmp_path / "too-large.png", 1300)
    page.goto(site)
    search_by_file(page, kept)
    search_by_file(page, too_large)
    expect(page.locator("#parts .note")).to_have_text(
        "not kept in this tab: another search or a reload loses it"
    )
    expect(page.locator(".hit")).to_have_count(24)

    page.reload()
    expect(page.locator("#message")).to_have_text(re.compile("not in this browser any more"))
    page.go_back()
    expect(page.locator("#parts")).to_contain_text(kept.name)
    expect(page.locator(".hit")).to_have_count(24)
    expect(page.locator("#parts .note")).to_have_count(0)


def test_a_refused_search_leaves_no_status_of_the_previous_one(site: str, page: Page) -> None:
    page.goto(site)
    search_for(page, "a red circle")
    expect(page.locator("#status")).to_contain_text("24 hits")
    page.get_by_label("Describe the pictures to find").fill("a red circle")
    page.get_by_role("button", name="Subtract").click()
    expect(page.locator("#message")).to_contain_text("cancel out")
    expect(page.locator("#status")).to_be_empty()
    expect(page.locator(".hit")).to_have_count(0)


def test_any_file_is_sent_and_told_by_its_bytes_whatever_its_name(
    site: str, pictures: Path, page: Page, tmp_path: Path
) -> None:
    """The page refused a file by the type the browser guesses from its name: a JPEG named photo.bin
    (application/octet-stream) never left it, and a text file got the page's words, not the server's."""

    def copy_of(label: str, name: str) -> Path:
        path = next(path for path in sorted(pictures.iterdir()) if label_of(path.name) == label)
        return Path(shutil.copy(path, tmp_path / name))

    page.goto(site)
    for chosen in (copy_of("orange hexagon", "hexagon"), copy_of("blue square", "photo.bin")):
        search_by_file(page, chosen)
        expect(page.locator(".hit").first).to_have_attribute(
            "data-id", hashlib.sha256(chosen.read_bytes()).hexdigest()
        )

    pasted = copy_of("red circle", "pasted.bin").read_bytes()
    transfer = page.evaluate_handle(
        """(data) => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], "pasted.bin", { type: "application/octet-stream" }));
            return transfer;
        }""",
        base64.b64encode(pasted).decode(),
    )
    page.evaluate(
        "(transfer) => document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer }))",
        transfer,
    )
    expect(page.locator(".hit").first).to_have_attribute("data-id", hashlib.sha256(pasted).hexdigest())

    expect(page.locator("#parts img")).to_be_visible()  # the preview of a picture the browser can draw

    # Such a file's preview was a broken image, and the message the API's ("parts[0].image: not a …").
    words = tmp_path / "notes.txt"
    words.write_text("just some text")
    search_by_file(page, words)
    expect(page.locator("#message")).to_have_text(
        re.compile(r"^“notes\.txt” is not a picture the search can read \(JPEG, PNG, .* or \w+\)\.$")
    )
    expect(page.locator(".hit")).to_have_count(0)
    expect(page.locator("#parts img")).to_have_count(0)
    expect(page.locator("#parts").get_by_role("img", name="no preview: notes.txt")).to_be_visible()


def test_a_links_weights_and_minimum_score_reach_the_search_as_written(site: str, page: Page) -> None:
    """A weight that is no number became NaN ("parts[0].weight = nan is not a finite number"), and a minimum
    score of 0 or less was left out of the search while the link kept it."""
    page.goto(f"{site}/?part=text:abc:people")
    expect(page.locator("#message")).to_have_text("A weight is a number such as 1 or -0.5, not “abc”.")

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{site}/?q=a+red+circle&min_score=-0.5")
    expect(page.locator("#status")).to_contain_text("scoring at least -0.5")
    expect(page.locator("#min-score-value")).to_have_text("-0.5")
    assert url_query(page) == {"q": ["a red circle"], "min_score": ["-0.5"]}
    [search] = [url for url in requested if "/api/search?" in url]
    assert parse_qs(urlsplit(search).query)["min_score"] == ["-0.5"]

    page.goto(f"{site}/?q=a+red+circle&min_score=high")
    expect(page.locator("#message")).to_have_text("The minimum score is a number from -1 to 1, not “high”.")


def test_a_refusal_is_said_in_the_users_words(demo_search: str, page: Page, tmp_path: Path) -> None:
    """The page showed the API's words, meant for programs: the fields of the search request
    ("parts[0].text is empty") and sizes in bytes."""
    with running_web(demo_search, collection=COLLECTION, max_upload_bytes=100 * 1024) as url:
        for link, words in (
            ("q=", "The query text is empty."),
            ("part=text:nan:a+dog", "A weight is a number such as 1 or -0.5, not “nan”."),
            ("part=text:0:a+dog", "Every weight of the query is 0: give a part another weight."),
            (f"like={'0' * 64}", "The picture 0000000000… is not in the collection any more."),
            ("like=photo.jpg", "“photo.jpg” is not the id of a picture."),
            ("q=a+dog&min_score=2", "The minimum score is a number from -1 to 1, not “2.0”."),
            ("&".join(["q=a+dog"] * 17), "The query has 17 parts; the most is 16."),
            ("q=%26nbsp%3B", "The query text has no words: only spaces, control characters or markup."),
        ):
            page.goto(f"{url}/?{link}")
            expect(page.locator("#message")).to_have_text(words)

        # Files the web tier refuses, then one whose header the encoder refuses (the rest is cut off).
        huge = io.BytesIO()
        Image.new("1", (9000, 8000)).save(huge, "PNG")
        for name, content, words in (
            ("large.png", bytes(300 * 1024), "The picture is 300 KB; the limit is 100 KB."),
            ("empty.png", b"", "“empty.png” is empty."),
            (
                "huge.png",
                huge.getvalue()[:100],
                "“huge.png” has too many pixels: 9000x8000; the limit is 64 million.",
            ),
            (
                "IMG_0002.HEIC",
                b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
                "“IMG_0002.HEIC” is a HEIC photo, which the search cannot read: convert it to JPEG.",
            ),
        ):
            (tmp_path / name).write_bytes(content)
            search_by_file(page, tmp_path / name)
            expect(page.locator("#message")).to_have_text(words)

    with running_web(demo_search, collection="nowhere") as url:
        page.goto(url)
        expect(page.locator("#message")).to_have_text("The collection “nowhere” holds no pictures yet.")


def test_refusals_with_no_picture_to_name_and_the_encoders_own_are_in_the_users_words_too(
    demo_search: str, page: Page
) -> None:
    """The words that name the query's picture threw where there was none (the page then said that it could
    not reach its server); the encoder's size limit, an offset past the last page and a collection of another
    model were shown in the API's words."""

    def refused_by_the_encoder(data: bytes, max_bytes: int) -> str:
        with pytest.raises(UnencodableImage) as rejected:
            open_checked(data, ImageLimits(max_bytes, 10**8))
        return f"image: {rejected.value}"  # as the search service words it

    with pytest.raises(ServiceError) as another_model:
        CollectionInfo(COLLECTION, "ViT-B/32", 512).require_model("small-clip.pt")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    with running_web(demo_search, collection=COLLECTION) as url:
        page.goto(url)
        answer = page.evaluate("fetch('/api/search?q=a+dog&offset=999999').then((r) => r.json())")
        for error, words in (
            (answer["error"], "No more results can be loaded for this search."),
            (refused_by_the_encoder(bytes(2_500_000), 10**6), "The file is 2.4 MB; the limit is 976.6 KB."),
            (
                refused_by_the_encoder(heic, 1 << 20),
                "The file is a HEIC photo, which the search cannot read: convert it to JPEG.",
            ),
            (
                refused_by_the_encoder(b"GIF89a", 1 << 20),
                f"The file is not a picture the search can read ({NOT_A_PICTURE.split('(')[1]}.",
            ),
            (
                another_model.value.message,
                "The collection was made with another model than the search service's encoder runs: tell its "
                "operator.",
            ),
            (None, "The search was refused."),
        ):
            assert page.evaluate("([error]) => refusalWords(error, null)", [error]) == words, error


def test_a_stored_name_shows_its_invisible_characters_escaped_as_the_cli_shows_them(
    site: str, page: Page
) -> None:
    """A right-to-left override in a file name showed "\u202egnp.evil.png" as "gnp.live.png"."""
    page.goto(site)
    disguised = "\u202egnp.evil.png"
    hit = {"id": "a" * 64, "score": 0.5, "name": disguised, "uri": f"/p/{disguised}", "metadata": {}}
    page.evaluate("([hit]) => renderHits([{ ...hit, thumbnail: `/thumbnails/${hit.id}` }], false, 24)", [hit])
    name = page.locator(".hit .name")
    expect(name).to_have_text(shown_by_the_cli(disguised))
    expect(name).to_have_attribute("title", shown_by_the_cli(f"/p/{disguised}"))
    expect(page.locator(".hit .like")).to_have_attribute(
        "aria-label", f"More like {shown_by_the_cli(disguised)}"
    )
    tricky = "a b\tc\nd\re\x07f\x7fg\xa0h\xadi\u200bj\u2028k\u2066l\U000e0001m\U0010fffdn é 日本 🐕"
    assert page.evaluate("([text]) => visible(text)", [tricky]) == shown_by_the_cli(tricky)


def test_moving_the_slider_by_keyboard_searches_once_it_settles(site: str, page: Page) -> None:
    """The page's clock stands still while the keys are pressed: a busy machine's pause between two presses
    must not pass for the slider settling."""
    page.clock.install()
    page.goto(site)
    search_for(page, "a yellow star")
    entries = page.evaluate("history.length")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.get_by_label("Minimum score").focus()
    page.clock.pause_at(page.evaluate("Date.now()") + 1)
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    page.clock.run_for(page.evaluate("SLIDER_SETTLE_MS"))
    page.clock.resume()
    expect(page.locator("#status")).to_contain_text("scoring at least 0.10")
    assert url_query(page) == {"q": ["a yellow star"], "min_score": ["0.10"]}
    searches = [url for url in requested if "/api/search?" in url]
    assert len(searches) == 1 and "min_score=0.10" in searches[0], searches  # only the settled value
    assert page.evaluate("history.length") == entries + 1

    page.go_back()
    expect(page).to_have_url(re.compile(r"\?q=a\+yellow\+star$"))
    expect(page.get_by_label("Minimum score")).to_have_value("0")
    expect(page.locator("#status")).not_to_contain_text("scoring at least")


def test_a_search_before_the_slider_settles_takes_the_score_it_shows(site: str, page: Page) -> None:
    """Enter pressed within SLIDER_SETTLE_MS of moving the slider searched without the minimum score it
    showed."""
    page.clock.install()
    page.goto(site)
    search_for(page, "a yellow star")
    page.clock.pause_at(page.evaluate("Date.now()") + 1)
    page.get_by_label("Minimum score").fill("0.3")
    search_for(page, "a blue square")
    page.clock.resume()
    expect(page.locator("#status")).to_contain_text("scoring at least 0.30")
    assert url_query(page) == {"q": ["a blue square"], "min_score": ["0.30"]}
    expect(page.locator("#min-score-value")).to_have_text("0.30")


@contextmanager
def the_hit_of_one_picture_named(name: str, encoder: str, page: Page, folder: Path) -> Iterator[Locator]:
    """The page's card of the one picture stored, ingested from `/pics/<name>`, found by its own id."""
    with running_search(encoder, folder / "milvus.db") as search:
        with search_stub(search.grpc.address) as stub:
            [stored] = ingest(stub, [(f"/pics/{name}", picture(0))])
        with running_web(search.grpc.address) as url:
            page.goto(f"{url}/?like={stored.id}")
            card = page.locator(".hit").first
            expect(card.locator(".name")).to_have_text(name)
            yield card


def test_a_long_file_name_is_shown_whole_and_the_score_is_read_out(
    tiny_encoder, page: Page, tmp_path: Path
) -> None:
    """A long name was cut short with an ellipsis, whole only in a hover title (a touch screen has no hover);
    the score's aria-label was on a span with no role, which screen readers leave out."""
    name = "holiday-2026-08-14-the-long-walk-along-the-cliffs-above-the-harbour-at-sunset.png"
    with the_hit_of_one_picture_named(name, tiny_encoder.grpc.address, page, tmp_path) as card:
        cut = "(name) => name.scrollWidth > name.clientWidth || name.scrollHeight > name.clientHeight"
        assert not card.locator(".name").evaluate(cut)
        expect(card.locator(".frame")).to_match_aria_snapshot(f'- img "{name}"\n- text: Score 1.000')


def test_a_file_name_with_a_backslash_is_shown_whole(tiny_encoder, page: Page, tmp_path: Path) -> None:
    name = "back\\slash.png"
    with the_hit_of_one_picture_named(name, tiny_encoder.grpc.address, page, tmp_path) as card:
        expect(card.locator("img.thumb")).to_have_attribute("alt", name)
        expect(card.get_by_role("button", name=f"More like {name}")).to_be_visible()


def test_while_a_search_runs_its_old_results_are_stale_and_load_no_more(site: str, page: Page) -> None:
    """The old "Load more", clicked while the next search ran, appended the next query's first page to the
    old results ("48 hits"); and nothing but aria-busy showed that a search was running."""
    page.goto(f"{site}/?q=a+red+circle")
    expect(page.locator(".hit")).to_have_count(24)
    held = hold_searches(page)
    box = page.get_by_label("Describe the pictures to find")
    box.fill("a blue square")
    box.press("Enter")
    expect(page.locator("#status")).to_have_text("Searching…")
    expect(page.locator("#results")).to_have_css("opacity", "0.45")
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    release(page, held, 1)
    expect(page.locator("#status")).to_contain_text("24 hits")
    expect(page.locator("#results")).to_have_css("opacity", "1")
    expect(page.locator(".hit")).to_have_count(24)
    assert label_of(shown(page)[0][1]) == "blue square"


def test_keyboard_focus_stays_on_the_page_when_its_control_goes(site: str, page: Page) -> None:
    """Pressing "More like this", "Less" or a part's remove button, or Enter in a weight box, rebuilt the list
    holding it: focus fell to the page's body."""
    page.goto(f"{site}/?q=a+red+circle")
    first = page.locator(".hit").first
    expect(first).to_be_visible()
    first.get_by_role("button", name=re.compile("^More like")).press("Enter")
    expect(page.locator(".hit .score").first).to_have_text("1.000")
    expect(page.locator("#results")).to_be_focused()

    page.locator(".hit").nth(1).get_by_role("button", name=re.compile("^Less like")).press("Enter")
    expect(page.locator("#parts li")).to_have_count(2)
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator("#results")).to_be_focused()

    weight = page.locator("#parts input").nth(1)
    weight.fill("-0.5")
    weight.press("Enter")
    expect(page).to_have_url(re.compile(r"part=id%3A-0.5%3A"))
    expect(page.locator("#parts input").nth(1)).to_be_focused()

    page.locator("#parts button").first.press("Enter")
    expect(page.locator("#parts li")).to_have_count(1)
    expect(page.locator("#parts button").first).to_be_focused()
    page.locator("#parts button").first.press("Enter")
    expect(page.get_by_label("Describe the pictures to find")).to_be_focused()


def test_a_long_query_part_is_cut_short_and_the_page_never_scrolls_sideways(site: str, page: Page) -> None:
    """At 375 px a part of 200 letters made the page 1,900 px wide, its weight box and remove button
    off-screen."""
    long = "x" * 200
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{site}/?q=a+red+circle&part=text:-1:{long}")
    expect(page.locator(".hit").first).to_be_visible()
    label = page.locator("#parts .label").nth(1)
    expect(label).to_have_attribute("title", long)
    expect(label).to_have_css("text-overflow", "ellipsis")
    assert label.evaluate("(label) => label.scrollWidth > label.clientWidth")  # cut short
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    remove = page.get_by_role("button", name=f"Remove {long} from the query").bounding_box()
    assert remove is not None and remove["x"] + remove["width"] <= 375


def test_the_search_box_takes_as_much_as_the_encoder_reads(site: str, page: Page) -> None:
    """A query of 200 KB failed in uvicorn's HTTP parser, before the API: the page said only "The search was
    refused." The box takes 4,096 characters, what the encoder reads of a text by default."""
    page.goto(site)
    search_for(page, "a red circle " * 1000)
    assert len(url_query(page)["q"][0]) == 4096
    expect(page.locator(".hit").first).to_be_visible()


def test_the_message_is_a_live_region_rendered_before_its_text_comes(site: str, page: Page) -> None:
    """#message was display:none until its text was set: a screen reader does not announce such a change."""
    page.goto(f"{site}/?q=a+red+circle")
    expect(page.locator(".hit").first).to_be_visible()
    message = page.locator("#message")
    expect(message).to_have_text("")
    expect(message).not_to_have_css("display", "none")
    page.get_by_label("Describe the pictures to find").fill("a red circle")
    page.get_by_role("button", name="Subtract").click()
    expect(message).to_contain_text("cancel out")


def test_busy_ends_with_the_latest_search_however_it_ends(site: str, page: Page) -> None:
    """A link whose picture is gone ended its search before clearing aria-busy, and the search before it,
    no longer the latest, left it set for good."""
    page.goto(f"{site}/?picture=1:deadbeef")
    gone = re.compile("not in this browser any more")
    expect(page.locator("#message")).to_have_text(gone)
    held = hold_searches(page)
    search = page.get_by_label("Describe the pictures to find")
    search.fill("a red circle")
    search.press("Enter")
    expect(page.locator("#results")).to_have_attribute("aria-busy", "true")
    page.go_back()
    expect(page.locator("#message")).to_have_text(gone)
    release(page, held, 1)  # its answer comes too late, and is dropped
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator("#status")).to_be_empty()
    expect(page.locator(".hit")).to_have_count(0)


def test_the_page_has_headings_and_its_title_names_the_query(site: str, page: Page) -> None:
    page.goto(site)
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    expect(page.get_by_role("heading", level=2, name="Results")).to_have_count(1)
    expect(page.get_by_role("list", name="Results")).to_have_count(1)
    expect(page).to_have_title("imagesearch")
    search_for(page, "a red circle")
    expect(page).to_have_title("a red circle — imagesearch")
    page.get_by_label("Describe the pictures to find").fill("red")
    page.get_by_role("button", name="Subtract").click()
    expect(page).to_have_title("a red circle, not red — imagesearch")


def test_text_focus_rings_and_input_edges_are_contrasted_enough(site: str, page: Page) -> None:
    """WCAG: 4.5:1 for text, 3:1 for a focus ring or an input's edge. The status line was 4.47:1, a part's
    kind 3.96:1, "no thumbnail" 2.22:1, the focus ring about 2:1 and the search box's edge 1.55:1."""
    page.route(re.compile(r"/thumbnails/"), lambda route: route.abort())
    page.goto(f"{site}/?q=a+red+circle&part=text:-1:red")
    expect(page.locator("#status")).to_contain_text("24 hits")
    expect(page.locator(".placeholder")).to_have_count(24)
    texts = [page.locator("#status"), page.locator(".placeholder").first, *page.locator(".part .kind").all()]
    for text in texts:
        assert text.evaluate(CONTRAST, "color") >= 4.5, text
    for edge in (page.get_by_label("Describe the pictures to find"), page.locator("#parts input").last):
        assert edge.evaluate(CONTRAST, "borderTopColor") >= 3, edge
    page.get_by_label("Describe the pictures to find").focus()
    for _ in range(2):  # the search box, then the button after it, reached by keyboard
        focused = page.locator(":focus")
        expect(focused).to_have_css("outline-style", "solid")
        assert focused.evaluate(CONTRAST, "outlineColor") >= 3, focused
        page.keyboard.press("Tab")
    page.locator("#parts input").last.focus()
    page.keyboard.press("Tab")  # the negative part's remove button
    expect(page.get_by_role("button", name="Remove red from the query")).to_be_focused()
    assert page.locator(":focus").evaluate(CONTRAST, "outlineColor") >= 3


def test_a_picture_left_behind_is_freed_and_a_refused_file_is_never_kept(
    site: str, pictures: Path, page: Page, tmp_path: Path
) -> None:
    """Every picture stayed in memory (its object URL never revoked), and a file the server refused was
    kept in the tab's storage all the same."""
    path = next(path for path in sorted(pictures.iterdir()) if label_of(path.name) == "green triangle")
    page.goto(site)
    search_by_file(page, path)
    preview = page.locator("#parts img").get_attribute("src")
    # The page's Content-Security-Policy lets blob: URLs only into images.
    readable = """(url) => new Promise((resolve) => {
        const image = new Image();
        image.onload = () => resolve(true);
        image.onerror = () => resolve(false);
        image.src = url;
    })"""
    assert page.evaluate(readable, preview)
    search_for(page, "a red circle")
    assert not page.evaluate(readable, preview)
    page.go_back()  # the tab's storage still has it
    expect(page.locator(".hit").first).to_have_attribute(
        "data-id", hashlib.sha256(path.read_bytes()).hexdigest()
    )

    kept = page.evaluate("() => Object.keys(sessionStorage).sort()")
    words = tmp_path / "notes.txt"
    words.write_text("just some text")
    search_by_file(page, words)
    expect(page.locator("#message")).to_contain_text("is not a picture the search can read")
    assert page.evaluate("() => Object.keys(sessionStorage).sort()") == kept


def test_a_reload_keeps_the_query_parts_in_the_order_they_were_added(site: str, page: Page) -> None:
    """The link was read back texts first, then ids, then weighted parts, then the picture."""
    page.goto(f"{site}/?q=a+red+circle")
    first = page.locator(".hit").first
    first.get_by_role("button", name=re.compile("^More like")).click()
    expect(page).to_have_url(re.compile("like="))
    page.get_by_label("Describe the pictures to find").fill("red")
    page.get_by_role("button", name="Add").click()
    page.get_by_label("Describe the pictures to find").fill("a circle")
    page.get_by_role("button", name="Subtract").click()
    kinds = page.locator("#parts .kind")
    order = ["like", "text", "text"]
    expect(kinds).to_have_text(order)
    labels = page.locator("#parts .label").all_inner_texts()
    page.reload()
    expect(kinds).to_have_text(order)
    assert page.locator("#parts .label").all_inner_texts() == labels


def test_the_search_box_shows_only_the_query_and_the_same_search_adds_no_history_entry(
    site: str, page: Page
) -> None:
    page.goto(site)
    search_for(page, "a red circle")
    entries = page.evaluate("history.length")
    box = page.get_by_label("Describe the pictures to find")
    box.press("Enter")
    expect(page.locator("#status")).to_contain_text("24 hits")
    assert page.evaluate("history.length") == entries

    page.locator(".hit").first.get_by_role("button", name=re.compile("^More like")).click()
    expect(page).to_have_url(re.compile("like="))
    expect(box).to_have_value("")
    page.go_back()
    expect(box).to_have_value("a red circle")
