# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench clean postgres report-png test-kserve

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelyard train examples/digits-lenet.yaml --output runs

test: $(STAMP) postgres
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The registry tests also run against a real PostgreSQL server (a throwaway cluster the tests start on
# loopback): install Debian's package when the machine has none. Needs root, as CI has.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql package for the registry tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Renders a demo's report.html and value.html to PNG with headless Chromium (Debian's package) and fails if a page
# is wider than 1,280 px. Not part of `make test`: it needs a browser and takes about 1.5 min.
report-png: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium package to render the reports"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/python -m modelyard.report.render --demo --out build/report-png

# The KServe Python SDK's REST client against a real `modelyard serve`. kserve 0.21 pins pandas<3 and psutil<6,
# which conflict with ours, so it lives in its own .venv-kserve (created on first use, about a minute).
test-kserve: $(STAMP)
	scripts/test-kserve.sh

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .venv-kserve runs build src/*.egg-info .pytest_cache
