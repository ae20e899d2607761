# Safewatch — the two commands of the README, and a few helpers.
.PHONY: demo test setup setup-test lock lock-upgrade lint unit integration clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

demo: setup  ## set up, start Kafka, produce an incident, run the job, print the table
	.venv/bin/safewatch demo

test: setup-test  ## set up (incl. PostgreSQL) and run lint, types and the whole test suite
	.venv/bin/ruff check pipelines jobs schemas tests
	.venv/bin/ruff format --check pipelines jobs schemas tests
	.venv/bin/mypy
	.venv/bin/pytest

setup:  ## Python venv from uv.lock, Kafka broker jars, Spark Kafka connector jars, Chromium
	bash infra/setup.sh

setup-test:  ## the above plus Debian's PostgreSQL, Prometheus and poppler-utils for the tests
	bash infra/setup.sh --test

lock:  ## re-resolve uv.lock after changing the dependencies in pyproject.toml (commit it)
	bash infra/setup.sh --lock

lock-upgrade:  ## re-resolve uv.lock with every package at the newest version allowed
	bash infra/setup.sh --lock --upgrade

unit: setup  ## only the fast tests (no JVM)
	.venv/bin/pytest tests/unit

integration: setup-test  ## only the tests against real Kafka, Spark and PostgreSQL
	.venv/bin/pytest tests/integration

clean:  ## stop the local broker and remove var/ (jars, data, demo, checkpoints)
	-.venv/bin/safewatch infra down
	rm -rf var
