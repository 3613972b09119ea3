# Every target creates .venv on first use and installs layerprof (editable) with the tested pins.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install profile test lint docs bench clean gate baselines mutate gpu-check gpu-wheels gpu-image gpu-smoke

install: $(STAMP)

# Everything comes through uv (installed into .venv by pip), which resolves, fetches and unpacks in parallel: torch and
# torchvision with CUDA's libraries (5.5 GB of the 6.8) took pip 2 min 6 s from this machine's local mirror and uv
# 17 s (2-core machine, other work beside both). uv reads no pip configuration, so tools/uv_sources.py hands it the
# sources and caps pip is configured with (a local wheel folder or mirror, a constraints file capping torch: `pip
# config list`), with pip's rule of the best version across every index. Where uv cannot be installed, pip installs
# everything.
# Bytecode: where PYTHONDONTWRITEBYTECODE is set (this project's CI image sets it) Python never writes a .pyc, and
# every process the tests start (pytest's workers, Ray's workers, each CLI run) compiled torch and ray from source
# again: a Ray test took 2.6x as long. So the install compiles every module of .venv, one process per core (about a
# minute on 2 cores; files that do not compile, such as Python 2 test data inside some packages, are skipped), and
# every recipe here runs without the setting (`unexport` below), so what is imported later (layerprof, the NePS
# test environment) keeps its .pyc too. Compiling only on first import instead saved the minute at install but cost
# more in the tests: Ray starts its workers together, and each compiled the same modules (fresh clone, quiet:
# test_ray_snippet 65.7 s against 31.8 s with bytecode, the Ray group's other tests 2-5x).
# The compiling overlaps the download: torch, torchvision and their dependencies (about a third of the sources)
# compile in the background while uv fetches and installs the rest, then the rest compiles (compileall skips a
# module whose .pyc is current). The first pass compiles only the folders there before the rest starts; a package
# replaced meanwhile is compiled again by the second pass, which checks each .pyc against its source's modification
# time. Both passes leave the same .pyc as one pass at the end (every module of .venv but one that does not
# compile, torch's py312_intrinsics.py).
INSTALLED = $$(ls -d $(VENV)/lib/python*/site-packages/*/)
unexport PYTHONDONTWRITEBYTECODE
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt
UV = $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt $$($(BIN)/python tools/uv_sources.py)
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) uv || echo "uv could not be installed: pip installs everything"
	if test -x $(BIN)/uv; then $(UV) torch torchvision; else $(PIP) torch torchvision; fi
	$(BIN)/python -m compileall -q -j 0 $(INSTALLED) > /dev/null & compiling=$$!; \
	if test -x $(BIN)/uv; then $(UV) -e '.[dev]'; else $(PIP) -e '.[dev]'; fi; installed=$$?; \
	wait $$compiling; exit $$installed
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

profile: $(STAMP)
	$(BIN)/layerprof profile paper-resnet18-cifar100

# One pytest worker per core (pytest-xdist; tests/conftest.py gives each worker one thread, keeps the modules with
# costly shared fixtures on one worker each and hands the longest work out first). Lint and the gate run beside the
# tests at the lowest priority (nice 19): they take only the CPU the tests leave idle (the workers wait on Ray's and
# NePS's processes: 1.7 of 2 cores busy on average), where after the tests mypy alone took a core for a minute. A third
# pytest worker fills that idle time worse: Ray's processes then compete with two busy workers and the Ray group's
# tests take 3x as long (quiet warm run: 402 s against 377 s with two). Their output comes whole after the tests';
# either failing fails `make test`.
CHECKS_LOG ?= build/checks.log
test: $(STAMP)
	@mkdir -p $(dir $(CHECKS_LOG))
	@echo "$(BIN)/python -m pytest -q -n auto --dist loadgroup (lint and the gate beside it, into $(CHECKS_LOG))"
	@nice -n 19 $(MAKE) --no-print-directory -j 2 --output-sync=target lint gate > $(CHECKS_LOG) 2>&1 & checks=$$!; \
	$(BIN)/python -m pytest -q -n auto --dist loadgroup; tests=$$?; \
	wait $$checks; checked=$$?; cat $(CHECKS_LOG); test $$tests = 0 && test $$checked = 0

lint: $(STAMP)
	$(BIN)/ruff check layerprof tests benchmarks examples tools
	$(BIN)/ruff format --check layerprof tests benchmarks examples tools
	$(BIN)/mypy

# The documentation (docs/, mkdocs.yml) built into build/site/ in strict mode: a warning fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --quiet

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_step_overhead.py
	$(BIN)/python benchmarks/bench_estimate_accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Mutation testing (tools/mutate.py): one small bug at a time planted in every module of layerprof/ this change
# touches (against BASE, committed or not), each run against the tests that execute the mutated code. Reports in
# build/mutate/. MODULES=layerprof/outputs/check.py names modules instead; MUTATE_ARGS=--changed-lines mutates only the
# lines the change touched. CPU-heavy: one core, minutes per module.
BASE ?= main
MODULES ?=
MUTATE_ARGS ?=
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py --base $(BASE) $(MUTATE_ARGS) $(MODULES)

# The deterministic gate: estimates (parameters, FLOPs, memory by category) must equal the committed CPU
# baselines. A change to the split, the FLOP count or the memory accounting fails here until accepted with
# `make baselines` (which rewrites them) and committed on purpose.
GATE_MODELS := paper-resnet18-cifar100:32 paper-gpt-14m:4

gate: $(STAMP)
	@mkdir -p build/gate
	@set -e; for item in $(GATE_MODELS); do \
	  model=$${item%%:*}; batch=$${item##*:}; \
	  $(BIN)/layerprof estimate $$model --target cpu --batch-sizes $$batch --out build/gate/$$model.json > /dev/null; \
	  $(BIN)/layerprof check build/gate/$$model.json profiles/baselines/cpu/$$model.json \
	    --summary-md build/gate/$$model.md --junit build/gate/$$model.xml; \
	done

baselines: $(STAMP)
	@set -e; for item in $(GATE_MODELS); do \
	  model=$${item%%:*}; batch=$${item##*:}; \
	  $(BIN)/layerprof estimate $$model --target cpu --batch-sizes $$batch --out profiles/baselines/cpu/$$model.json > /dev/null; \
	  echo "rewrote profiles/baselines/cpu/$$model.json"; \
	done

# One go of the GPU checks (<= 7 minutes on one NVIDIA GPU); results in build/gpu-check/<time>/. No install
# prerequisite: on a GPU machine without a package registry the script uses its python3 and the wheels in .whl/.
gpu-check:
	bash benchmarks/gpu_check.sh

# Wheels that a GPU machine without a package registry needs beside its preinstalled PyTorch (Python 3.12):
# carry .whl/ there; `make gpu-check` installs them with --no-deps into a folder of their own.
GPU_WHEELS := litgpt==0.5.13 jsonargparse==4.41.0 docstring_parser==0.18.0 typeshed_client==2.15.0 \
  peft==0.21.2 accelerate==1.16.0 torchao==0.18.0
gpu-wheels:
	rm -rf .whl
	python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

# An imitation of the GPU machine's image on this CPU (Python 3.12, torch 2.11 and the image's versions of what
# layerprof imports), and the GPU check's CPU smoke mode run in it with only the carried wheels added.
GPU_IMAGE := build/gpu-image
GPU_IMAGE_PYTHON ?= python3.12
$(GPU_IMAGE)/.installed: benchmarks/gpu_image_requirements.txt
	test -x $(GPU_IMAGE)/bin/python || $(GPU_IMAGE_PYTHON) -m venv $(GPU_IMAGE)
	$(GPU_IMAGE)/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/gpu_image_requirements.txt
	touch $@

gpu-image: $(GPU_IMAGE)/.installed

gpu-smoke: $(GPU_IMAGE)/.installed
	test -d .whl || $(MAKE) --no-print-directory gpu-wheels
	GPU_CHECK_SMOKE=1 GPU_CHECK_INSTALL=wheels PY=$(GPU_IMAGE)/bin/python GPU_CHECK_SITE=build/gpu-image-site \
	  OUT=build/gpu-smoke bash benchmarks/gpu_check.sh
