"""Task callables: the work behind each DAG's ``@task`` steps, one module per DAG.

Each step takes the settings and plain values (what XCom carries), prints what it did and
returns plain values. Importing these modules is cheap: ``mercury`` and its heavy
dependencies are imported inside the functions, so parsing a DAG imports none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mercury.config import Settings


def settings() -> Settings:
    """This worker's mercury settings (``MERCURY_PROFILE`` / ``MERCURY_CONFIG``)."""
    from mercury.config import load_settings

    return load_settings()


def log_line(line: str) -> None:
    """The steps' default log: one flushed line in the task log."""
    print(line, flush=True)
