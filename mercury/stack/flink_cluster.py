"""Flink: a standalone session cluster, the local stand-in for Managed Flink / Flink on EKS.

The cluster is started with the apache-flink package's own ``bin/start-cluster.sh`` from the
Flink env (infra/envs/flink). Flink needs absolute paths in its config while ours are
repository-relative, so every start renders the template in ``infra/local/flink`` into
``<data_dir>/flink/conf`` (see the template's header) and points Flink's scripts at it.

The scripts daemonise the JobManager and the TaskManager and write their pids into Flink's own
pid files; ``launch`` copies those pids into the stack's pid files, so ``stop`` ends exactly the
two JVMs this stack started and leaves any other cluster alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from mercury.ops.flink_dist import SETUP_HINT, flink_home, flink_python, java_binary
from mercury.ops.flink_rest import FlinkRestClient, FlinkRestError
from mercury.stack.base import Component, Health, StackError, pid_alive

# Names Flink's daemon pid files: <pid dir>/flink-<ident>-<daemon>.pid
IDENT = "mercury"
DAEMONS = {"jobmanager": "standalonesession", "taskmanager": "taskexecutor"}


class FlinkCluster(Component):
    name = "flink"
    start_timeout_s = 90.0

    # Where things go; all derived from the data dir so tests can point it elsewhere.
    @property
    def conf_dir(self) -> Path:
        """The rendered config dir Flink actually reads."""
        return self.settings.data_dir / "flink" / "conf"

    @property
    def daemon_pid_dir(self) -> Path:
        return self.settings.run_dir / "flink-daemons"

    @property
    def flink_log_dir(self) -> Path:
        return self.settings.log_dir / "flink"

    def script_env(self) -> dict[str, str]:
        """Environment for Flink's bin/ scripts (start/stop-cluster.sh, flink)."""
        return {
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_PID_DIR": str(self.daemon_pid_dir),
            "FLINK_LOG_DIR": str(self.flink_log_dir),
            "FLINK_IDENT_STRING": IDENT,
        }

    def health(self) -> Health:
        url = self.settings.flink.rest_url
        where = urlsplit(url).netloc or url
        try:
            overview = FlinkRestClient(url, timeout_s=3).overview()
        except FlinkRestError as exc:
            return Health(self.name, False, str(exc))
        taskmanagers = overview.get("taskmanagers", 0)
        total = overview.get("slots-total", 0)
        free = overview.get("slots-available", 0)
        version = overview.get("flink-version", "?")
        if not taskmanagers:
            return Health(self.name, False, f"{where} JobManager answers (flink {version}) but no "
                                            "TaskManager is registered")
        if not total:
            return Health(self.name, False, f"{where} {taskmanagers} TaskManager(s) registered "
                                            "but no task slot offered yet")
        return Health(self.name, True, f"{where} {taskmanagers} taskmanagers, {free}/{total} "
                                       f"slots free, flink {version}")

    def render_conf(self) -> Path:
        """Write ``<data_dir>/flink/conf`` from the template; return the directory."""
        template_dir = self.settings.flink.conf_dir
        template = template_dir / "config.yaml"
        if not template.is_file():
            raise StackError(f"no Flink config template at {template} (flink.conf_dir)")
        python = flink_python()
        if not python.is_file():
            raise StackError(f"the Flink env's python is missing ({python}): {SETUP_HINT}")
        data_dir = self.settings.data_dir.resolve()
        try:
            text = Template(template.read_text()).substitute(
                data_dir=data_dir, run_dir=self.settings.run_dir.resolve(),
                log_dir=self.settings.log_dir.resolve(), python=python)
        except (KeyError, ValueError) as exc:
            raise StackError(f"{template} has an unknown or malformed placeholder: {exc}") from exc

        conf = self.conf_dir
        conf.mkdir(parents=True, exist_ok=True)
        # Logging configs come from the installed package (they match its log4j version).
        shipped = flink_home() / "conf"
        for pattern in ("log4j*.properties", "logback*.xml"):
            for path in shipped.glob(pattern):
                shutil.copyfile(path, conf / path.name)
        shutil.copyfile(template_dir / "workers", conf / "workers")
        (conf / "config.yaml").write_text(
            f"# GENERATED from {template} by mercury.stack.flink_cluster; edit the template.\n"
            + text)
        for sub in ("checkpoints", "savepoints", "web-upload"):
            (data_dir / "flink" / sub).mkdir(parents=True, exist_ok=True)
        return conf

    def launch(self) -> None:
        self._check_rest_url()
        java_binary()
        home = flink_home()
        # A half-started cluster of ours (e.g. its TaskManager died) would hold the ports.
        if self.pids.alive(self.name):
            self.pids.stop_all(self.name)
        self.render_conf()
        self.flink_log_dir.mkdir(parents=True, exist_ok=True)
        self.daemon_pid_dir.mkdir(parents=True, exist_ok=True)
        self._forget_dead_daemons()
        with open(self.settings.log_dir / "flink-start.log", "ab") as log:
            # The script returns once both daemons are forked. A new session keeps the JVMs
            # out of our terminal's process group (Ctrl-C in a test run does not kill them).
            result = subprocess.run(
                ["bash", str(home / "bin" / "start-cluster.sh")], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120,
                env={**os.environ, **self.script_env()}, start_new_session=True)
        if result.returncode != 0:
            raise StackError(f"start-cluster.sh exited with {result.returncode} "
                             f"(see {self.settings.log_dir / 'flink-start.log'})")
        for tag, daemon in DAEMONS.items():
            pids = self._daemon_pids(daemon)
            if not pids:
                raise StackError(f"Flink's {daemon} did not start (see {self.flink_log_dir})")
            for n, pid in enumerate(pids):
                self.pids.write(self.name, pid, tag if n == 0 else f"{tag}-{n}")

    def taskmanager_pids(self) -> list[int]:
        return self._daemon_pids(DAEMONS["taskmanager"])

    def start_taskmanager(self) -> int:
        """One more TaskManager for the running cluster (after one died), with Flink's own
        ``bin/taskmanager.sh``; recorded with the cluster's processes so ``stop`` ends it."""
        before = set(self.taskmanager_pids())
        with open(self.settings.log_dir / "flink-start.log", "ab") as log:
            subprocess.run(
                ["bash", str(flink_home() / "bin" / "taskmanager.sh"), "start"], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120, check=True,
                env={**os.environ, **self.script_env()}, start_new_session=True)
        started = [pid for pid in self.taskmanager_pids() if pid not in before]
        if not started:
            raise StackError(f"Flink's taskexecutor did not start (see {self.flink_log_dir})")
        self.pids.write(self.name, started[0], f"taskmanager-{started[0]}")
        return started[0]

    def stop(self) -> str:
        message = super().stop()
        self._forget_dead_daemons()
        return message

    def _check_rest_url(self) -> None:
        parts = urlsplit(self.settings.flink.rest_url)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port != 8081:
            raise StackError(f"flink.rest_url is {self.settings.flink.rest_url} but the local "
                             "cluster listens on http://127.0.0.1:8081 (infra/local/flink/"
                             "config.yaml): change one of them")

    def _daemon_pid_file(self, daemon: str) -> Path:
        return self.daemon_pid_dir / f"flink-{IDENT}-{daemon}.pid"

    def _daemon_pids(self, daemon: str) -> list[int]:
        path = self._daemon_pid_file(daemon)
        if not path.is_file():
            return []
        pids = [int(line) for line in path.read_text().split() if line.strip().isdigit()]
        return [pid for pid in pids if pid_alive(pid)]

    def _forget_dead_daemons(self) -> None:
        """Drop Flink's pid files once their processes are gone (the scripts append to them)."""
        for daemon in DAEMONS.values():
            path = self._daemon_pid_file(daemon)
            if path.is_file() and not self._daemon_pids(daemon):
                path.unlink(missing_ok=True)
