# Two entry points: `make demo` runs the main job against a local sandbox, `make test` runs the tests.
# The virtual environment with the pinned packages is set up on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean constraints

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The SQL sink is tested on a private PostgreSQL server; the script installs PostgreSQL if missing.
test: $(STAMP)
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$$(sed -n 's/^uv==//p' constraints.txt)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --constraint constraints.txt --editable ".[test]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .demo .pytest_cache

# Re-pin every package the demo and the tests install, from a scratch environment.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin && .venv-pin/bin/python -m pip install --quiet uv
	.venv-pin/bin/uv pip install --quiet --python .venv-pin/bin/python --editable ".[test]"
	{ echo "# Pinned versions for the demo and the tests. Regenerate with: make constraints"; \
	  .venv-pin/bin/uv pip freeze --python .venv-pin/bin/python | grep -v -e '^-e' -e '^uv=='; \
	  .venv-pin/bin/uv --version | sed 's/^uv \([^ ]*\).*/uv==\1/'; } > constraints.txt
	rm -rf .venv-pin
