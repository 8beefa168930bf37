# Set-up on a fresh machine is part of every target: `make demo` and `make test`
# create .venv and install the project (torch 2.14.1 / torchvision 0.29.1 come
# from this machine's disk through pip).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo-out

.PHONY: install test demo lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

test: install
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test ran" >&2; fi; \
	exit $$rc

# Until the demo job lands (issue 6), the demo generates a small dataset in the
# official ActivityNet layout with a random checkpoint and runs `frameexit infer` on it.
demo: install
	$(PY) -m jobs.synthetic $(DEMO)/data --videos 24 --seed 0
	$(VENV)/bin/frameexit infer jobs/activitynet_inference_2d.yml \
		--data.path_frame $(DEMO)/data/frames --data.path_split $(DEMO)/data/split_val.txt \
		--data.path_label $(DEMO)/data/labels.json --data.path_classid $(DEMO)/data/classes.txt \
		--checkpoint.init $(DEMO)/data/checkpoint.pth --model.backbone.name torchvision.resnet18 \
		--model.backbone.output_dim 512 --model.first_threshold 0.05 --out $(DEMO)/infer

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache *.egg-info
