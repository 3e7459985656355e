# The README's two commands: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robench-installed

.PHONY: install demo test test-all regression regression-baseline clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/robench demo --out reports/demo

test: $(STAMP)
	$(PY) -m pytest -q

# The CI regression gate: the committed bundled models x every threat model, checked against the
# committed baseline in both directions (a broken attack makes a defense look better, too).
REGRESSION_OUT ?= build/regression
regression: $(STAMP)
	$(VENV)/bin/robench suite reports/regression/suite.toml --out $(REGRESSION_OUT) --no-progress
	$(VENV)/bin/robench check $(REGRESSION_OUT) --baseline reports/baselines/regression.json --two-sided

# Rewrite the baseline after a change that is meant to move the numbers (commit it with the change).
regression-baseline: $(STAMP)
	$(VENV)/bin/robench suite reports/regression/suite.toml --out $(REGRESSION_OUT) --no-progress
	$(VENV)/bin/robench baseline $(REGRESSION_OUT) --out reports/baselines/regression.json --force

# Also the tests marked slow (long training runs).
test-all: $(STAMP)
	ROBENCH_SLOW=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) reports/demo reports/models build .pytest_cache
