# The README's two commands: `make demo` (main job) and `make test` (tests).
# Each creates the venv and installs everything it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel on this machine's disk; GPU users may override: make TORCH_SPEC='torch==2.13.0+cu126'
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
MUTATION_VENV ?= .venv-mutation
MUTATION_TARGETS := benchmarks/mutation/targets.txt
MUTATION_WORKERS ?= 1
export FLWR_HOME ?= $(CURDIR)/.flwr
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION = 1
export MPLBACKEND = Agg
export OMP_WAIT_POLICY ?= PASSIVE
# A literal comma, for $(call ...) arguments.
, := ,

.PHONY: install demo test bench lint mutation clean

install: $(STAMP)

# new-venv DIR EXTRAS: the pinned torch first, then the package and its extras in one resolve.
define new-venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(1)/bin/pip install --quiet -e '.[$(2)]'
	$(1)/bin/pip check
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml
	$(call new-venv,$(VENV),dev)

$(MUTATION_VENV)/.installed: pyproject.toml
	$(call new-venv,$(MUTATION_VENV),dev$(,)mutation)

demo: install
	$(BIN)/fedsynth demo --out runs/demo

test: install
	$(BIN)/pip check
	$(BIN)/python -m pytest -q

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check fedsynth tests benchmarks

# Mutation testing of the privacy code (not CI: tens of minutes): mutmut mutates the targets
# one at a time, the fast tests must fail; results/mutation.json has killed, survived and
# score per module. One worker by default, niced: the machine is shared (MUTATION_WORKERS=2 on
# an idle one). `mutmut results` lists survivors.
mutation: $(MUTATION_VENV)/.installed
	$(MUTATION_VENV)/bin/pip check
	rm -rf mutants
	OMP_NUM_THREADS=1 nice -n 15 $(MUTATION_VENV)/bin/mutmut run --max-children $(MUTATION_WORKERS) \
		$$(awk '!/^#/ {print $$2}' $(MUTATION_TARGETS))
	$(MUTATION_VENV)/bin/python benchmarks/mutation/report.py

clean:
	rm -rf $(VENV) $(MUTATION_VENV) mutants runs .pytest_cache
