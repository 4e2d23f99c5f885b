# Loan prequalification service: every day-to-day command. `make help` lists them.
SHELL := /bin/bash
# Where `pip install --user uv` puts uv when it was not installed system-wide.
export PATH := $(HOME)/.local/bin:$(PATH)
.DEFAULT_GOAL := help
DEVSTACK := scripts/devstack
UV := uv run --frozen

RATE ?= 500
DURATION ?= 60
WARMUP ?= 60
GENERATOR ?= auto

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: install
install: ## Create the venv and install the workspace from uv.lock (scripts/sync-venv)
	scripts/sync-venv

.PHONY: up
up: ## Start PostgreSQL, Kafka and the three services (no Docker)
	$(DEVSTACK) up

.PHONY: down
down: ## Stop everything the local stack started
	$(DEVSTACK) down

.PHONY: status
status: ## Show each component with pid, port and health
	$(DEVSTACK) status

.PHONY: demo
demo: ## Bring the stack up and run a scripted demo of every outcome
	$(DEVSTACK) up
	$(UV) python -m prequal_devstack.demo

.PHONY: test
test: ## Run every test but the fault-injection suite, one pytest per workspace member, on the real stack
	./run_tests.sh

.PHONY: chaos
chaos: ## Fault-injection suite (kills services, stops Kafka, stops and crashes PostgreSQL)
	./run_tests.sh --chaos

.PHONY: lint
lint: ## ruff check, ruff format --check, mypy --strict
	$(UV) ruff check .
	$(UV) ruff format --check .
	$(UV) mypy .

.PHONY: fmt
fmt: ## Format and autofix with ruff
	$(UV) ruff format .
	$(UV) ruff check --fix .

.PHONY: bench
bench: ## Constant-rate load test: make bench RATE=1000 DURATION=30 (WARMUP=60 s first)
	$(DEVSTACK) up
	$(UV) python -m prequal_devstack.bench --rate $(RATE) --duration $(DURATION) --warmup $(WARMUP) \
		--generator $(GENERATOR)

.PHONY: run-local
run-local: ## The same system in containers: docker compose up --build (needs a Docker engine)
	docker compose up --build
