# Set-up on a fresh machine is part of every target: `make demo` and `make test`
# create .venv and install the project (torch 2.14.1 / torchvision 0.29.1 come
# from this machine's disk through pip).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo-out
# the suite on every core (pytest-xdist; worksteal: test durations range from milliseconds to 20 s)
PYTEST_ARGS ?= -n auto --dist worksteal

.PHONY: install test demo lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

test: install
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test ran" >&2; fi; \
	exit $$rc

# The embedded demo: a synthetic dataset, a seeded random ResNet-18, features
# extracted once, FrameExit heads trained for two betas, a threshold sweep and
# the report with the curve (see the README for the figures it reaches).
demo: install
	$(VENV)/bin/frameexit demo --out $(DEMO)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache *.egg-info
