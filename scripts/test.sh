#!/usr/bin/env bash
# Every test, in the order that fails fastest: lint, contracts, then pytest (unit tests first,
# then the ones on the real local stack; the Flink cluster is started once per run by a
# fixture and stopped at the end if the run started it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/bin

echo "== ruff"
"${VENV}/ruff" check .
echo "== contracts"
"${VENV}/mercury" contracts check
echo "== services: redis, postgres"
"${VENV}/mercury" stack up --only redis,postgres
echo "== pytest"
exec "${VENV}/python" -m pytest -q "$@"
