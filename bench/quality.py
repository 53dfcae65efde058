"""Meaning, measured through the whole product: precision@10 of the small CLIP on unseen synthetic pictures.

    .venv/bin/python bench/quality.py [--per-class 10] [--model demo/small-clip-synthetic.pt]

Renders pictures with seeds never used in training, ingests them through the search service (encoder =
the small CLIP), then asks one text query ("a red circle") and 5 fresh pictures per colour x shape.
"""

import argparse
import tempfile
from pathlib import Path

from harness import print_table

from client import SearchClient
from client.local import local_services
from demo.run import SMALL_CLIP
from synthetic.evaluation import Quality, measure, write_pictures

COLLECTION_SEED, QUERY_SEED = 7_000_001, 7_000_002  # training renders with seed 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=10, help="collection pictures per colour x shape")
    parser.add_argument(
        "--query-pictures", type=int, default=5, help="fresh query pictures per colour x shape"
    )
    parser.add_argument("--model", default=str(SMALL_CLIP))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "services.log", "w") as log:
        pictures = Path(folder) / "pictures"
        write_pictures(pictures, args.per_class, COLLECTION_SEED)
        milvus = str(Path(folder) / "milvus.db")
        with (
            local_services(args.model, milvus, "cpu", 0, 0, log, metrics_ports=(0, 0)) as services,
            SearchClient(services.search, collection="quality") as client,
        ):
            summary = client.ingest([pictures])
            quality = measure(client, top_k=10, query_seed=QUERY_SEED, query_pictures=args.query_pictures)
    rows = [
        [text.query, f"{text.precision:.1f}", f"{image.precision:.1f}"]
        for text, image in zip(quality.text, quality.image, strict=True)
    ]
    print_table(
        f"precision@10 per colour x shape ({summary.stored} pictures, model {Path(args.model).name})",
        ["text query", "text -> image", f"{args.query_pictures} fresh pictures -> image (mean)"],
        rows,
    )
    worst_text, worst_image = Quality.worst(quality.text), Quality.worst(quality.image)
    print_table(
        "summary",
        ["", "text -> image", "image -> image"],
        [
            ["mean precision@10", f"{Quality.mean(quality.text):.3f}", f"{Quality.mean(quality.image):.3f}"],
            [
                "worst query",
                f"{worst_text.precision:.1f} ({worst_text.query})",
                f"{worst_image.precision:.1f} ({worst_image.query})",
            ],
        ],
    )


if __name__ == "__main__":
    main()
