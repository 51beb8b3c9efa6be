# Two commands: `make demo` and `make test`. Both bootstrap .venv from plain Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)

# Python 3.10+ (pyproject's requires-python): torch 2.13.0 has no wheel for 3.9.
# torch==2.13.0 goes first: pyproject asks for torch>=2.2, which it then already satisfies,
# so no other (multi-GB) torch build is ever pulled in.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/balm demo --out demo_out

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n 2 --timeout 600

bench: $(STAMP)
	for f in benchmarks/[!_]*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_out
