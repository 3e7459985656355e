# The README's two commands: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robench-installed

.PHONY: install demo test test-all clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/robench demo --out reports/demo

test: $(STAMP)
	$(PY) -m pytest -q

# Also the tests marked slow (long training runs).
test-all: $(STAMP)
	ROBENCH_SLOW=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) reports/demo reports/models .pytest_cache
