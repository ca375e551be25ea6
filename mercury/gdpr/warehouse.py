"""Erasure in the warehouse: one dbt operation (``dbt/macros/erase_subjects.sql``), so the
same statements run on DuckDB locally and on Snowflake in production.

Tables (not views: a view shows what its tables hold) with a user column lose the subjects'
rows. The marts are rebuilt from the lake every run anyway; deleting now means the warehouse
does not wait for the next build. Snowflake keeps deleted rows for Time Travel (set to 1 day on
these schemas) and then Fail-safe (7 days): docs/COMPLIANCE.md counts both in the 30 days.

The subjects' ids reach the macro through an environment variable, not ``--args``: dbt writes
its arguments into ``run_results.json`` and its statements into ``dbt.log``, and an erasure
must not leave the ids it erased in the warehouse's own files. For the same reason this one
operation gets a scratch target and log folder, removed when it ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from mercury.gdpr.evidence import Removal
from mercury.gdpr.subject import Subject

if TYPE_CHECKING:
    from mercury.config import Settings

MARKER = "mercury-erased "  # the macro's log line per ticket and table
SUBJECTS_VARIABLE = "MERCURY_ERASE_SUBJECTS"  # read by the macro: {ticket: [id, ...]}


def erase_warehouse(settings: Settings, subjects: list[Subject],
                    env_extra: Mapping[str, str] | None = None) -> list[Removal]:
    from mercury.warehouse.dbt_runner import run_dbt

    target = settings.warehouse.dbt_target
    duckdb_path = settings.warehouse.duckdb_path
    if target == "local" and (duckdb_path is None or not duckdb_path.exists()):
        return []  # no warehouse built yet: nothing in it
    ids = orjson.dumps({s.ticket: list(s.ids) for s in subjects}).decode()
    with tempfile.TemporaryDirectory(prefix="mercury-erasure-dbt-") as scratch:
        env = {**(env_extra or {}), SUBJECTS_VARIABLE: ids,
               "DBT_TARGET_PATH": f"{scratch}/target", "DBT_LOG_PATH": f"{scratch}/logs"}
        result = run_dbt(["run-operation", "erase_subjects"], target=target,
                         settings=settings, env_extra=env)
    return [Removal(line["ticket"], "warehouse", line["table"], line["removed"])
            for line in _logged(result.output)]


def _logged(output: str) -> list[dict]:
    return [orjson.loads(line[line.index(MARKER) + len(MARKER):])
            for line in output.splitlines() if MARKER in line]

