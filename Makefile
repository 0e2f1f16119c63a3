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

.PHONY: install demo test test-verl gpu-wheels gpu-check gpu-check-tiny
install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/antisd train --overwrite true

# The whole suite on this CPU's own kernels, then the numerical comparisons (marker `exact`) again under the
# portable and the AVX2 kernels: a tolerance must follow from fp32 arithmetic, not from the CPU it was written on.
test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest
	@for cap in default avx2; do \
		echo "== exact-comparison tests with ATEN_CPU_CAPABILITY=$$cap"; \
		$(OFFLINE) ATEN_CPU_CAPABILITY=$$cap $(PY) -m pytest -m exact -p no:cacheprovider || exit 1; \
	done

# The verl plug-in's environment and tests (docs/verl.md). verl pins transformers<5.11, so it gets its own
# environment; TRL is installed there too, for the test that the plug-in computes what the TRL trainer computes.
VERL_VENV ?= .verl-venv
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.installed-stamp

$(VERL_STAMP): pyproject.toml
	python3 -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q --upgrade pip
	$(VERL_PY) -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > $(VERL_VENV)/constraints.txt
	$(VERL_PY) -m pip install -q -c $(VERL_VENV)/constraints.txt "verl[verl-core]>=0.9.1,<0.10" "trl>=1.16,<2" "math-verify>=0.9,<0.10" rich matplotlib pytest
	$(VERL_PY) -m pip install -q --no-deps -e .
	touch $(VERL_STAMP)

test-verl: $(VERL_STAMP)
	$(OFFLINE) RAY_AUTH_MODE=disabled $(VERL_PY) -m pytest tests_verl -p no:cacheprovider -W ignore::UserWarning

# The GPU check (scripts/gpu_check.py, docs/results/gpu.md). `make gpu-wheels` here fetches what the GPU image
# lacks into .whl/; on the lent GPU machine (its own python3, nothing to download, .whl carried with the working
# tree) `make gpu-check` (= bash scripts/gpu_check.sh) installs them into /tmp/site and runs the check into $$OUT.
# `make gpu-check-tiny` runs the same code on the CPU with tiny sizes (CI runs it as tests/test_gpu_check.py).
gpu-wheels:
	bash scripts/gpu_wheels.sh .whl

gpu-check:
	bash scripts/gpu_check.sh

gpu-check-tiny: $(STAMP)
	$(OFFLINE) $(PY) scripts/gpu_check.py --tiny --out runs/gpu-check-tiny
