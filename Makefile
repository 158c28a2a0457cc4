# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# Only the tritonserver binary of this wheel is used; its metadata pins numpy<2, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps nvidia-pytriton==0.7.0
	touch $(STAMP)

install: $(STAMP)

# The main job on the bundled default scenario: one day of the bundled Wikipedia trace at 4,000 req/s.
demo: $(STAMP)
	$(BIN)/spillway simulate --trace default --start 21d --duration 1d --mean-rps 4000 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs *.egg-info .pytest_cache
