# Two commands a new user needs: `make demo` (answer a question about an image) and `make test`.
# Each creates or reuses .venv and installs the pinned dependencies (CPU torch first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IMAGE ?= assets/shapes.png
QUESTION ?= How many objects are there?

.PHONY: demo test lint install lmms-eval-env

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$$(sed -n 's/^torch==//p' requirements.lock)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The shipped model (src/llava_mini/pretrained/llava-mini-tiny) answers; see the README for how it is built.
demo: $(STAMP)
	$(BIN)/llava-mini ask $(IMAGE) "$(QUESTION)"

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests

# lmms-eval in a virtual environment of its own (its pins conflict with .venv's: av<16 among others);
# the plugin test (tests/eval/test_lmms_eval_run.py) uses it where it exists, and CI builds it.
LMMS_VENV ?= .venv-lmms-eval
LMMS_STAMP := $(LMMS_VENV)/.installed

$(LMMS_STAMP): pyproject.toml requirements.lock requirements-lmms-eval.lock
	test -x $(LMMS_VENV)/bin/python || $(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LMMS_VENV)/bin/python -m pip install -q torch==$$(sed -n 's/^torch==//p' requirements.lock)
	$(LMMS_VENV)/bin/python -m pip install -q --no-deps -r requirements-lmms-eval.lock
	$(LMMS_VENV)/bin/python -m pip install -q --no-deps -e .
	$(LMMS_VENV)/bin/python -m lmms_eval --help > /dev/null
	touch $(LMMS_STAMP)

lmms-eval-env: $(LMMS_STAMP)
