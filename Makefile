# Every target sets itself up on a fresh machine: the virtual environment is made and filled on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard protos/imagesearch/v1/*.proto)

.PHONY: install test lint protos bench

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

# pytest exits 5 when it collected no test; make fails on that like on any other non-zero code.
test: lint
	$(VENV)/bin/pytest

# Regenerates the gRPC code in imagesearch/v1 from protos/ (CI checks that the result is committed).
protos: $(INSTALLED)
	$(PYTHON) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

bench: $(INSTALLED)
	$(PYTHON) bench/encoder.py
