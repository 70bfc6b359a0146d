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

# The whole loop offline on the bundled example (examples/nat-miniature, a few minutes on 2 CPUs):
# build the NAT artifact, train the tiny model of tiny-llama/ from scratch, evaluate it in an agent loop.
demo: $(STAMP)
	rm -rf build/demo build/demo-run build/demo-eval
	$(VENV)/bin/dsc build examples/nat-miniature/spec.yaml --out build/demo
	$(VENV)/bin/dsc inspect build/demo -n 1
	$(VENV)/bin/dsc train build/demo --model examples/nat-miniature/tiny-llama --out build/demo-run
	$(VENV)/bin/dsc eval build/demo-run --artifact build/demo --out build/demo-eval
	@echo
	@echo "artifact  build/demo          parquet shards, manifest.json, README.md (its dataset card), quarantine.jsonl"
	@echo "model     build/demo-run      the trained model, run.json (settings, losses, the artifact it read)"
	@echo "eval      build/demo-eval     results.json (the score and its 95% CI) and every episode, question by question"

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

# The miniature NAT experiment (experiments/nat_miniature/RESULTS.md): niced, one torch thread.
experiment-nat: $(STAMP)
	nice -n 19 $(PY) experiments/nat_miniature/run.py

clean:
	rm -rf build .pytest_cache
