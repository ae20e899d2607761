# Safewatch — the two commands of the README, and a few helpers.
.PHONY: demo test setup setup-test lint unit integration clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

demo: setup  ## set up, start Kafka, produce an incident, run the job, print the table
	.venv/bin/safewatch demo

test: setup-test  ## set up (incl. PostgreSQL) and run lint, types and the whole test suite
	.venv/bin/ruff check pipelines jobs schemas tests
	.venv/bin/ruff format --check pipelines jobs schemas tests
	.venv/bin/mypy
	.venv/bin/pytest

setup:  ## Python venv, Kafka broker jars, Spark Kafka connector jars
	bash infra/setup.sh

setup-test:  ## the above plus Debian's PostgreSQL for the integration tests
	bash infra/setup.sh --test

unit: setup  ## only the fast tests (no JVM)
	.venv/bin/pytest tests/unit

integration: setup-test  ## only the tests against real Kafka, Spark and PostgreSQL
	.venv/bin/pytest tests/integration

clean:  ## stop the local broker and remove var/ (jars, data, demo, checkpoints)
	-.venv/bin/safewatch infra down
	rm -rf var
