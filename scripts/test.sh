#!/usr/bin/env bash
# Every test, in the order that fails fastest: lint, types (mypy: strict on the core, see
# pyproject.toml; its cache is .mypy_cache), contracts, then pytest (unit tests first, then
# the ones on the real local stack; the Flink cluster is started once per run by a fixture
# and stopped at the end if the run started it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/bin

echo "== ruff"
"${VENV}/ruff" check .
echo "== mypy"
"${VENV}/mypy"
echo "== contracts"
"${VENV}/mercury" contracts check
echo "== services: redis, postgres"
"${VENV}/mercury" stack up --only redis,postgres
echo "== pytest"
# The slowest tests are listed at the end: the suite has to stay under 30 minutes on 2 cores.
exec "${VENV}/python" -m pytest -q --durations=25 "$@"
