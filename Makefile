# Two commands a new user needs: `make demo` (answer a question about an image) and `make test`.
# Each creates or reuses .venv and installs the pinned dependencies (CPU torch first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IMAGE ?= assets/shapes.png
QUESTION ?= How many objects are there?

.PHONY: demo test lint install

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$$(sed -n 's/^torch==//p' requirements.lock)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

SHIPPED := src/llava_mini/pretrained/llava-mini-tiny/config.json

# Until the trained model is committed, the demo runs a random tiny model end to end.
demo: $(STAMP)
	@if [ -f $(SHIPPED) ]; then \
		$(BIN)/llava-mini ask $(IMAGE) "$(QUESTION)"; \
	else \
		test -f runs/random-tiny/config.json || $(BIN)/llava-mini init runs/random-tiny; \
		$(BIN)/llava-mini ask $(IMAGE) "$(QUESTION)" --model runs/random-tiny; \
	fi

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests
