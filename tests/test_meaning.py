"""Meaning through the whole chain: the small CLIP finds "a red circle" among unseen synthetic pictures.

A regression anywhere (preprocessing, tokenising, normalisation, metric, result mapping) drops precision.
"""

import pytest
from conftest import running_encoder, running_search

from client import SearchClient
from demo.run import SMALL_CLIP
from synthetic.evaluation import Quality, QueryScore, measure, write_pictures

COLLECTION_SEED, QUERY_SEED = 9_000_001, 9_000_002  # training renders with seed 0


@pytest.fixture(scope="module")
def quality(tmp_path_factory) -> Quality:
    folder = tmp_path_factory.mktemp("meaning")
    write_pictures(folder / "pictures", per_class=4, seed=COLLECTION_SEED)
    with (
        running_encoder(SMALL_CLIP) as encoder,
        running_search(encoder.grpc.address, folder / "milvus.db") as search,
        SearchClient(search.grpc.address, collection="meaning") as client,
    ):
        assert client.ingest([folder / "pictures"]).stored == 4 * 48
        return measure(client, top_k=4, query_seed=QUERY_SEED, query_pictures=1)


def misses(scores: list[QueryScore]) -> list[tuple[str, float]]:
    return [(score.query, score.precision) for score in scores if score.precision < 1]


def test_text_queries_find_their_colour_and_shape(quality: Quality) -> None:
    assert Quality.mean(quality.text) >= 0.8, misses(quality.text)


def test_pictures_find_pictures_of_the_same_colour_and_shape(quality: Quality) -> None:
    assert Quality.mean(quality.image) >= 0.8, misses(quality.image)
