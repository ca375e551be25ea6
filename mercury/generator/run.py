"""Running the generator against the configured bindings: event log, Postgres, manifest."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mercury.config import Settings
from mercury.eventlog import open_producer
from mercury.generator.knobs import Knobs
from mercury.generator.manifest import Manifest
from mercury.generator.traffic import TrafficGenerator


@dataclass(frozen=True)
class RunResult:
    manifest: Manifest
    manifest_path: Path
    seconds: float

    @property
    def events_per_s(self) -> float:
        return sum(self.manifest.generated.values()) / max(self.seconds, 1e-9)


def progress_printer(stream=sys.stderr, every_s: float = 1.0):
    """A progress line at most once a second: rewritten in place on a terminal, appended in
    logs (CI, Airflow) so they stay readable."""
    started = last = time.perf_counter()
    live = stream.isatty()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last < every_s and done < total:
            return
        last = now
        rate = done / max(now - started, 1e-9)
        line = f"generated {done:,}/{total:,} events ({100 * done // total}%) {rate:,.0f} events/s"
        stream.write(f"\r{line}" if live else f"{line}\n")
        if live and done >= total:
            stream.write("\n")
        stream.flush()

    return report


def generate(settings: Settings, knobs: Knobs, manifest_path: Path | None = None,
             with_postgres: bool = True, show_progress: bool = True) -> RunResult:
    writer = None
    if with_postgres:
        from mercury.generator.profiles_pg import ProfileTableWriter

        writer = ProfileTableWriter(settings.postgres.conninfo())
    producer = open_producer(settings, writer_id=f"gen{knobs.seed}")
    started = time.perf_counter()
    try:
        manifest = TrafficGenerator(knobs, producer, on_profile_changes=writer,
                                    progress=progress_printer() if show_progress else None).run()
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    path = manifest_path or settings.data_dir / "manifests" / f"generate-seed{knobs.seed}.json"
    manifest.write(path)
    return RunResult(manifest, Path(path), seconds)
