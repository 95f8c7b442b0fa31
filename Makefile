PYTHON ?= python

# What CI runs (.ci/run), without the install.
check: lint test

lint:
	$(PYTHON) -m ruff check .

test:
	$(PYTHON) -m pytest -q tests

# The fast subset (no learning runs, clusters or multi-process jobs).
fast: lint
	$(PYTHON) -m pytest -q tests -m "not slow"

.PHONY: check lint test fast
