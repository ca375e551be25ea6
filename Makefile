# The platform's entry points. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV := .venv/bin
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup lock demo test lint contracts up down status bench clean

setup:             ## install uv and the locked environments
	@bash scripts/setup.sh

lock:              ## re-lock the envs after a dependency change (honours PIP_FIND_LINKS)
	@uv lock $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
	@cd infra/envs/flink && uv lock $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
	@cd infra/envs/checkov && uv lock

demo: setup        ## the main job end to end on the local defaults
	@$(VENV)/mercury demo $(ARGS)

test: setup        ## every test: lint, types, contract checks, unit, integration on the local stack
	@bash scripts/test.sh $(ARGS)

lint: setup
	@$(VENV)/ruff check .

contracts: setup   ## schemas, data classes, compatibility, registry
	@$(VENV)/mercury contracts check

up: setup          ## start Redis, Postgres, Flink and Airflow (only what is down)
	@$(VENV)/mercury stack up

down:              ## stop what `make up` started, nothing else
	@$(VENV)/mercury stack down

status:
	@$(VENV)/mercury stack status

bench: setup       ## benchmarks (see docs/PERFORMANCE.md)
	@$(VENV)/python bench/generator_throughput.py

clean: down
	rm -rf .local
