# sdexplain — the two commands a newcomer needs:
#   make lab    set up (once) and open the notebooks in JupyterLab, on the shipped toy model
#   make test   set up (once) and run every test, notebooks included
#
# Setup is idempotent: a virtual environment in .venv, re-installed only when pyproject.toml changes.
# torch is installed first and on its own, so a CPU-only machine doesn't pull a multi-GB CUDA build
# by accident. Override: make lab TORCH_SPEC="torch==2.5.1" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdexplain-installed

.PHONY: setup lab test test-fast notebooks benchmarks toy clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

# Jupyter refuses to run as root unless told; containers and Colab-like machines often are root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

# Opens at notebooks/index.ipynb, which links the English notebooks and the Chinese edition (notebooks/zh/).
lab: setup
	cd notebooks && ../$(BIN)/jupyter lab $(LAB_ARGS) index.ipynb

# Everything CI runs: unit tests (slow ones too), every notebook executed with nbval, the widget
# tests again under Colab's ipywidgets 7.7.1, and the notebooks driven in a real browser.
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q tests notebooks --nbval-lax -m "not browser" --durations=15 $(PYTEST_ARGS)
	bash scripts/ci_colab_widgets.sh
	bash scripts/ci_browser.sh

# The quick unit tests only: every test over ~5 s is marked slow. One torch thread: the tiny test
# models gain nothing from two, and on a busy 2-core machine two threads per process spin against
# the other work (measured: 40 s with one thread, 5 min with two, same machine and load).
test-fast: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q tests -m "not slow and not browser" --durations=10 $(PYTEST_ARGS)

# Re-execute the notebooks in place on the toy model and strip widget state (outputs stay); then
# rebuild the Chinese edition from them plus notebooks/zh/translations/ and execute it (fails on a
# stale or missing translation: `python -m sdexplain.notebook_i18n status` lists them).
notebooks: setup
	$(BIN)/python -m sdexplain.notebook_tools refresh notebooks/[0-9][0-9]_*.ipynb
	$(BIN)/python -m sdexplain.notebook_i18n execute

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py

# Re-train the shipped toy model from scratch (resumable: stop and run again at will).
toy: setup
	$(BIN)/python -m sdexplain.toy.train --threads 2
	$(BIN)/python -m sdexplain.toy.evaluate

clean:
	rm -rf $(VENV) .pytest_cache
