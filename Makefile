# `make demo` and `make test` each create the virtual environment they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-fast bench clean experiment-nat

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# CPU machines: the pinned local CPU torch first, so nothing pulls CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dsc build specs/fireact-chat.yaml --out build/fireact-chat
	$(VENV)/bin/dsc inspect build/fireact-chat -n 1

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

# The miniature NAT experiment (experiments/nat_miniature/RESULTS.md): niced, one torch thread.
experiment-nat: $(STAMP)
	nice -n 19 $(PY) experiments/nat_miniature/run.py

clean:
	rm -rf build .pytest_cache
