# Every target sets itself up on a fresh machine: the virtual environment is made and filled on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard protos/imagesearch/v1/*.proto)

.PHONY: install test lint protos bench demo web demo-imagenet small-clip

$(PYTHON):
	python3 -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

install: $(INSTALLED)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no test; make fails on that like on any other non-zero code.
test: lint
	$(VENV)/bin/pytest

# Regenerates the gRPC code in imagesearch/v1 from protos/ (CI checks that the result is committed).
protos: $(INSTALLED)
	$(PYTHON) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=. $(PROTOS)

# Benchmarks print tables; they are not tests (see README, "Benchmarks").
bench: $(INSTALLED)
	$(PYTHON) bench/encoder.py
	$(PYTHON) bench/search.py
	$(PYTHON) bench/quality.py

# The whole product offline: synthetic pictures, the small CLIP, both services, queries, grids.
demo: $(INSTALLED)
	$(VENV)/bin/imgsearch demo

# The demo's pictures behind the search page (http://127.0.0.1:8080/) until Ctrl-C; WEB_PORT=N moves it.
WEB_PORT ?= 8080
web: $(INSTALLED)
	$(VENV)/bin/imgsearch demo --web --web-port $(WEB_PORT)

# The Milvus tutorial end to end with the real ViT-B/32 and its ImageNet sample. Needs internet.
IMAGENET := .work/imagenet
demo-imagenet: $(INSTALLED)
	mkdir -p $(IMAGENET)
	test -d $(IMAGENET)/train || (curl -fL -o $(IMAGENET)/data.zip \
		https://github.com/milvus-io/pymilvus-assets/releases/download/imagedata/reverse_image_search.zip \
		&& cd $(IMAGENET) && unzip -q -o data.zip)
	$(VENV)/bin/imgsearch demo --workdir $(IMAGENET) --model ViT-B/32 --pictures $(IMAGENET)/train \
		--query "a white dog" --query "a red car" --image-query "$$(ls $(IMAGENET)/test/*/*.JPEG | head -n 1)"

# Retrains the small CLIP of the demo and the meaning tests (about 26 minutes on 2 CPU cores).
small-clip: $(INSTALLED)
	$(PYTHON) models/train_small_clip.py --out demo/small-clip-synthetic.pt
