# `make demo` and `make test` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline copy of IMDB (JSONL); when absent, kgemma uses tensorflow-datasets' imdb_reviews.
IMDB ?= $(if $(wildcard ../shared/data/imdb/train.jsonl.gz),../shared/data/imdb,tfds)
# Re-running into an existing run folder is refused; `make demo RUN=runs/demo2` picks another.
RUN ?= runs/demo

.PHONY: setup lint test test-fast demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	touch $@

# The whole suite on TensorFlow, then the core model tests (tiny backbones) on JAX and torch, through KERAS_BACKEND.
CORE_TESTS := tests/test_lora.py tests/test_fused_blocks.py tests/test_pooling.py \
	tests/test_explain.py::test_input_gradients_match_finite_differences
# JAX's own multi-worker run (processes started with KERAS_BACKEND=jax), in the JAX pass.
JAX_TESTS := tests/test_launch.py::test_on_jax_two_workers_train_one_process_weights_through_a_kill_and_resume
# Test worker processes (pytest-xdist), each taking whole files so that a file's shared
# fixtures (a trained tiny run, the converted real model) are built once. Most of a tiny
# test is single-threaded graph tracing, so two workers on two cores halve the wall time.
WORKERS ?= 2
# The slowest tests are listed after each run, to keep the suite's time in view.
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --durations=10

# ruff's formatter and linter (configured in pyproject.toml); `make test` runs it first.
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: setup lint
	$(PYTEST)
	KERAS_BACKEND=jax $(PYTEST) $(CORE_TESTS) $(JAX_TESTS)
	KERAS_BACKEND=torch $(PYTEST) $(CORE_TESTS)

# A developer's quick loop: tiny backbones only, no command-line runs, subprocesses or real model,
# and the tests parametrized over both Gemma families on Gemma 3 alone.
test-fast: setup
	$(PYTEST) -x -m "not slow and not real and not older_gemma"

# The main job: fine-tune the embedded Gemma 3 270M on a small real IMDB sample, then evaluate it.
demo: setup
	$(BIN)/kgemma-train --data $(IMDB) --max-examples 400 --epochs 1 --sequence-length 128 \
		--learning-rate 5e-4 --schedule cosine --warmup-steps 10 --no-save-keras --output $(RUN)
	$(BIN)/kgemma-eval --adapter $(RUN)/adapter.npz --data $(IMDB) --max-examples 400 --output $(RUN)/eval

clean:
	rm -rf $(VENV) runs
