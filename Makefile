# Two entry points (see README): `make demo` runs the embedded default, `make test` runs the test suite.
# Each creates .venv and installs what it needs; torch is pinned to the CPU build here, not in the package.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	touch $(STAMP)

.PHONY: install demo test
install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/antisd train --overwrite true

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest
