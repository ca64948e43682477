# The README's two commands: `make demo` (main job) and `make test` (tests).
# Each creates the venv and installs everything it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel on this machine's disk; GPU users may override: make TORCH_SPEC='torch==2.13.0+cu126'
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export FLWR_HOME ?= $(CURDIR)/.flwr
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION = 1
export MPLBACKEND = Agg
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

demo: install
	$(BIN)/fedsynth demo --out runs/demo

test: install
	$(BIN)/pip check
	$(BIN)/python -m pytest -q

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check fedsynth tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
