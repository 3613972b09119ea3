# Every target creates .venv on first use and installs layerprof (editable) with the tested pins.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install profile test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

profile: $(STAMP)
	$(BIN)/layerprof profile paper-resnet18-cifar100

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check layerprof tests benchmarks examples
	$(BIN)/ruff format --check layerprof tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_step_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
