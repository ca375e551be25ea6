"""One Python process that runs Airflow CLI commands one after another (``WarmAirflow`` in
tests/airflow_fixtures.py starts it): Airflow, and whatever the tasks import (Spark's JVM,
Great Expectations, torch and the embedding model), is loaded once for all of a test's
`airflow dags test` runs instead of once per run.

Protocol, one JSON object a line: on stdin ``{"args": [...], "env": {...}, "log": path}``;
the command's stdout and stderr (file descriptors 1 and 2, so child processes' output too)
go to ``log``; the answer ``{"returncode": n}`` goes to the stdout this process started with.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def run_command(args: list[str]) -> int:
    """What ``airflow <args>`` does after its start (airflow/__main__.py), as an exit code."""
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    try:
        parsed = cli_parser.get_parser().parse_args(args)
        write_default_airflow_configuration_if_needed()
        parsed.func(parsed)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)  # what the interpreter prints for a text exit
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    # Between commands, whatever a thread left running prints goes to stderr, never into the
    # answers.
    os.dup2(2, 1)
    saved = os.dup(1), os.dup(2)
    for line in sys.stdin:
        request = json.loads(line)
        extra = request.get("env", {})
        before = {key: os.environ.get(key) for key in extra}
        os.environ.update(extra)
        with open(request["log"], "ab") as log:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                code = run_command(request["args"])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        answers.write(json.dumps({"returncode": code}) + "\n")


if __name__ == "__main__":
    serve()
