#!/usr/bin/env bash
# Puts into .whl/ (which git ignores) what bench/gpu.py needs on a lent GPU machine beyond what its image
# holds (Python 3.12 with torch, torchvision, pillow, numpy, pandas, requests and prometheus-client): gRPC and
# protobuf at this project's versions, the clip package and what it imports (regex and tqdm: the image is said
# to hold them, and a missing one would stop the run at its first import), pymilvus and Milvus Lite. README "The encoder tier on
# a GPU" gives the command that installs them there and runs the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$@"
}
rm -rf .whl
mkdir .whl
download -d .whl grpcio==1.85.3 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 protobuf==7.36.2 \
    ftfy==6.3.1 wcwidth==0.9.4 regex==2026.11.19 tqdm==4.70.1 setuptools==80.10.2 pymilvus==2.6.17 cachetools==8.0.2 orjson==3.13.0 \
    python-dotenv==1.2.4
python3 -m pip wheel --quiet --no-deps --wheel-dir .whl openai-clip==1.0.1 # PyPI has only its source
# Milvus Lite's 55 MB wheel would take the carried files past the 64 MiB a run may carry: it travels
# unpacked, as an xz archive of what its wheel puts into site-packages (34 MB).
unpacked=$(mktemp -d)
download -d "$unpacked" milvus-lite==2.5.1
unzip -q "$unpacked"/milvus_lite-*.whl -d "$unpacked/site"
tar -cJf .whl/milvus-lite-2.5.1.tar.xz -C "$unpacked/site" .
rm -rf "$unpacked"
du -sh .whl
