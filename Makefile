# Two commands for a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Test files run in parallel, each file in one worker process (pytest-xdist); TEST_WORKERS=0 runs them in this one.
TEST_WORKERS ?= 2

.PHONY: demo test install readme bench lint clean screenshots

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/authops demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/lint-imports

readme: $(STAMP)
	$(BIN)/python -m authops.readme
	$(BIN)/python -m authops.products.docs

bench: $(STAMP)
	$(BIN)/python -m bench.authz

clean:
	rm -rf $(VENV) .authops .authops-demo

screenshots: $(STAMP)
	AUTHOPS_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/console/test_console_browser.py -k screenshots
