# Huizhen: two commands on a fresh Debian machine with Python 3.11.
#   make run    set up and start the service on http://127.0.0.1:8080 (embedded defaults)
#   make test   set up (incl. apt packages for the tests) and run the whole suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml media/fastpath_build.py media/fastpath_rx.c | sha1sum | cut -c1-12)

.PHONY: run test lint bench demo clean

run: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 -x '/\.' . > /dev/null
	$(BIN)/huizhen serve

test: $(STAMP)
	scripts/install-system-deps.sh test
	$(BIN)/python -m compileall -q -j 0 -x '/\.' . > /dev/null
	$(BIN)/ruff check .
	# mypy (~15 s on a cold cache) beside the suite's first, light tests; either failing fails
	$(BIN)/mypy > .mypy.log 2>&1 & types=$$!; scripts/run-tests.sh; tests=$$?; \
		wait $$types; typed=$$?; cat .mypy.log; rm -f .mypy.log; [ $$tests -eq 0 ] && [ $$typed -eq 0 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/fanout.py

demo: $(STAMP)
	$(BIN)/huizhen demo

$(STAMP): pyproject.toml media/fastpath_build.py media/fastpath_rx.c
	scripts/install-system-deps.sh run
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the same packages from PyPI several times faster than pip (~10 s vs ~40 s);
	# pip is the fallback where uv cannot be had
	$(BIN)/python -m pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python \
		-e '.[test]' || $(BIN)/python -m pip install -q -e '.[test]'
	# bytecode written once here: where PYTHONDONTWRITEBYTECODE is set, every process would
	# otherwise compile all it imports (the server started in 5.2 s instead of 2.1 s)
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
