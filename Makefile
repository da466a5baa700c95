# Two commands for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench bench-extract bench-dedup bench-load bench-copy bench-scale clean install bytecode

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Bytecode for the package, as a regular (non-editable) install would have: the editable
# install has none, and PYTHONDONTWRITEBYTECODE (set on some machines) stops Python from
# caching it, so every command would compile the package again at start-up.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q aggregator

run: $(STAMP) bytecode
	mkdir -p var
	$(BIN)/aggregator --config config/aggregator.yaml --feeds feeds.yaml run

# The suite in TEST_WORKERS processes (pytest-xdist): most tests wait on subprocesses,
# servers, PostgreSQL and timers rather than compute, so 4 share 2 cores well; worksteal
# hands a long test's queued neighbours to idle workers. TEST_WORKERS=0: one process.
# Bytecode first: the tests start the CLI in hundreds of subprocesses, each of which would
# compile the package again (some 15% of the suite's CPU time).
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

test: $(STAMP) bytecode
	$(PYTEST)

# The suite without the tests marked slow (@pytest.mark.slow), for the edit-test loop;
# `make test` still runs everything.
test-fast: $(STAMP) bytecode
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check aggregator tests bench
	$(BIN)/mypy aggregator

bench: $(STAMP) bytecode
	$(BIN)/python bench/bench_cycle.py

bench-extract: $(STAMP)
	$(BIN)/python bench/bench_extract.py

bench-dedup: $(STAMP)
	$(BIN)/python bench/bench_dedup.py

bench-load: $(STAMP) bytecode
	$(BIN)/python bench/bench_load.py

bench-copy: $(STAMP)
	$(BIN)/python bench/bench_copy.py

# SQLite `update --all` beside one and two PostgreSQL workers over the same 5,000 feeds on 50
# loopback hosts; needs PostgreSQL on 127.0.0.1 (AGGREGATOR_BENCH_POSTGRES to change it).
bench-scale: $(STAMP) bytecode
	$(BIN)/python bench/bench_scale.py --json var/bench-scale.json

clean:
	rm -rf $(VENV) var/*.db* var/public build *.egg-info
