# Two commands for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-extract bench-dedup bench-load clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/aggregator --config config/aggregator.yaml --feeds feeds.yaml run

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check aggregator tests bench
	$(BIN)/mypy aggregator

bench: $(STAMP)
	$(BIN)/python bench/bench_cycle.py

bench-extract: $(STAMP)
	$(BIN)/python bench/bench_extract.py

bench-dedup: $(STAMP)
	$(BIN)/python bench/bench_dedup.py

bench-load: $(STAMP)
	$(BIN)/python bench/bench_load.py

clean:
	rm -rf $(VENV) var/*.db* var/public build *.egg-info
