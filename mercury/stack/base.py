"""What every local-stack component provides, and the pid bookkeeping they share."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from mercury.config import Settings
from mercury.errors import StackError  # noqa: F401 (raised by every component)


@dataclass(frozen=True)
class Health:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:<9} {self.detail}"


class Component(ABC):
    """One service of the local stack."""

    name: str = ""
    start_timeout_s: float = 60.0

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pids = PidFiles(settings.run_dir)

    @abstractmethod
    def health(self) -> Health:
        """Probe the service; never raises."""

    @abstractmethod
    def launch(self) -> None:
        """Start the service (it is known to be down). Record pids of what was started."""

    def stop(self) -> str:
        """Stop what this stack started; leave a service that was already running alone."""
        stopped = self.pids.stop_all(self.name)
        if not stopped:
            return f"{self.name}: not started by this stack, left running" if self.health().ok \
                else f"{self.name}: not running"
        return f"{self.name}: stopped pid {', '.join(map(str, stopped))}"

    def ensure_up(self) -> Health:
        health = self.health()
        if health.ok:
            return health
        self.launch()
        return self.wait_healthy()

    def wait_healthy(self) -> Health:
        deadline = time.monotonic() + self.start_timeout_s
        health = self.health()
        while not health.ok and time.monotonic() < deadline:
            time.sleep(0.5)
            health = self.health()
        if not health.ok:
            raise StackError(
                f"{self.name} did not become healthy within {self.start_timeout_s:.0f}s: "
                f"{health.detail} (logs: {self.settings.log_dir})"
            )
        return health

    def spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> int:
        """Start a long-running child detached from our session and record its pid."""
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.settings.log_dir / log_name, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)
        self.pids.write(self.name, proc.pid)
        return proc.pid


class PidFiles:
    """Pid files under the run dir: ``<component>.pid`` or ``<component>.<n>.pid``."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def write(self, component: str, pid: int, tag: str = "") -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / (f"{component}.{tag}.pid" if tag else f"{component}.pid")
        path.write_text(f"{pid}\n")
        return path

    def files(self, component: str) -> list[Path]:
        if not self.run_dir.is_dir():
            return []
        return sorted(self.run_dir.glob(f"{component}.pid")) + sorted(
            self.run_dir.glob(f"{component}.*.pid"))

    def alive(self, component: str) -> list[int]:
        return [pid for pid in map(_read_pid, self.files(component)) if pid and pid_alive(pid)]

    def stop_all(self, component: str, timeout_s: float = 20.0) -> list[int]:
        stopped = []
        for path in self.files(component):
            pid = _read_pid(path)
            if pid and pid_alive(pid):
                terminate(pid, timeout_s)
                stopped.append(pid)
            path.unlink(missing_ok=True)
        return stopped


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM the process, and its whole group when it leads one (``spawn`` starts children
    as group leaders, so e.g. Airflow standalone's components go too); SIGKILL what lingers.
    Returns once every process signalled is gone, so the ports are free again."""
    leads_group = _pgid(pid) == pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if leads_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid) and not (leads_group and group_members(pid)):
                return
            time.sleep(0.2)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
