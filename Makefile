# The README's two commands: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robench-installed

.PHONY: install lint demo demo-full test test-all regression regression-baseline reproduce ablation sweep clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/robench demo --out reports/demo

# The longer demo settings: twice the samples, C&W 5 x 100 (C&W-wb 5 x 150) Adam steps (about 3x longer).
demo-full: $(STAMP)
	$(VENV)/bin/robench demo --full --out reports/demo-full

# ruff (configured in pyproject.toml): lint and format check; `make test` runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -n 2 --dist loadgroup

# The CI regression gate: the committed bundled models x every threat model, checked against the
# committed baseline in both directions (a broken attack makes a defense look better, too).
REGRESSION_OUT ?= build/regression
REGRESSION_FLAGS ?=
regression: $(STAMP)
	$(VENV)/bin/robench suite reports/regression/suite.toml --out $(REGRESSION_OUT) --no-progress $(REGRESSION_FLAGS)
	$(VENV)/bin/robench check $(REGRESSION_OUT) --baseline reports/baselines/regression.json --two-sided

# Rewrite the baseline after a change that is meant to move the numbers (commit it with the change).
regression-baseline: $(STAMP)
	$(VENV)/bin/robench suite reports/regression/suite.toml --out $(REGRESSION_OUT) --no-progress
	$(VENV)/bin/robench baseline $(REGRESSION_OUT) --out reports/baselines/regression.json --force

# The bundled-data reproduction suites of 001 Tables 7, 10, 11 and 004 Tables 1-3 (reports/reproduce/),
# each rendered beside its paper table into reports/reproduce/results/.
reproduce: $(STAMP)
	ROBENCH=$(VENV)/bin/robench reports/reproduce/run_bundled.sh

# The C&W-wb ablation of docs/results.md: eta modes x two budgets x softmax / GM, every AUC population.
ABLATION_OUT ?= build/ablation
ablation: $(STAMP)
	$(VENV)/bin/robench suite reports/reproduce/ablation.toml --out $(ABLATION_OUT) --no-progress
	$(VENV)/bin/robench report $(ABLATION_OUT) --layout white-box-ablation --ci --scale 255 --out reports/reproduce/results/ablation.md --force

# The L-inf budget sweep of docs/results.md: the white-box threat's worst case vs torchattacks' APGD-CE + APGD-DLR
# on both committed models at eps 0.05 ... 0.3 (reports/sweep/budget_sweep.{csv,md,png}).
sweep: $(STAMP)
	$(PY) reports/sweep/run_sweep.py --out build/sweep

# Also the tests marked slow (long training runs).
test-all: lint
	ROBENCH_SLOW=1 $(PY) -m pytest -q -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) reports/demo reports/demo-full reports/models build .pytest_cache
