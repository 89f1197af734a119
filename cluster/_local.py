"""LocalCluster: run a cluster's nodes as child processes on this machine, and break them.

This is the one API that tests, `make run` and the CLI use to start, stop, kill, pause and
inspect nodes, so fault injection means the same thing everywhere.

- Each node runs `python -m sessionquorum.store` with *this* interpreter (same venv), in a
  new session: Ctrl-C in a terminal reaches only the launcher, which then stops the nodes
  itself (SIGTERM, a grace period, SIGKILL) and can report how each one ended.
- A node's stdout and stderr are appended to `<dir>/<id>/node.log` (a restart adds a header
  line, never truncates); its pid goes to `<dir>/<id>/node.pid` so a later launcher can find it.
- `stop()` touches only the processes this object started. `down()` also stops nodes found
  through pid files, after checking /proc that they are really this cluster's nodes.
- Layout, Status, leader and waits come from ClusterView (_view.py); live membership
  (grow, shrink) from LiveMembership (_local_members.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from . import _pidfiles
from ._bootstrap import Overrides, PreparedCluster, open_cluster_dir, prepare_cluster_dir
from ._errors import ClusterError
from ._local_members import LiveMembership

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
SIGNAL_SETTLE_TIMEOUT_S = 2.0
EXEC_TIMEOUT_S = 5.0

# (config file, node id, node data dir) -> argv. The argv must contain the node data dir
# and "sessionquorum.store" as arguments so pid files can be verified (see _pidfiles).
NodeCommand = Callable[[Path, str, Path], Sequence[str]]
# (node id, node argv) -> the argv to run, e.g. NetnsNetwork.wrap: ["ip", "netns", "exec", ns, *argv].
# The wrapper must exec the node (same pid), so signals and the pid-file check reach the node.
NodeWrapper = Callable[[str, list[str]], Sequence[str]]


def default_node_command(config: Path, node_id: str, data_dir: Path) -> list[str]:
    """The real node, run by this interpreter so it sees the same installed packages."""
    return [sys.executable, "-m", "sessionquorum.store", "--config", str(config), "--node", node_id,
            "--data-dir", str(data_dir)]  # fmt: skip


def _stop_leftovers(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Last resort for nodes nobody stopped: SIGTERM, then SIGKILL."""
    running = {n: p for n, p in procs.items() if p.poll() is None}
    if running:
        logger.warning("stopping nodes left running: %s", ", ".join(running))
    for proc in running.values():
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
    for proc in running.values():
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


class LocalCluster(LiveMembership):
    """The nodes of one cluster directory as processes of this machine."""

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 3,
        *,
        overrides: Overrides | None = None,
        node_command: NodeCommand = default_node_command,
        hosts: Sequence[str] | None = None,
        node_wrapper: NodeWrapper | None = None,
    ) -> None:
        super().__init__(data_dir)
        self._nodes = nodes
        self._overrides = overrides
        self._node_command = node_command
        self._hosts = tuple(hosts) if hosts is not None else None
        self._node_wrapper = node_wrapper
        # Always the same dict object: the finalizer below holds it, and stop() / detach()
        # empty it in place.
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # Nodes run in their own session, so nothing else ends them if a script forgets
        # stop(): stop them when this object is collected or the interpreter exits.
        weakref.finalize(self, _stop_leftovers, self._procs)
        self.reconciled = []  # see LiveMembership

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        node_command: NodeCommand = default_node_command,
        node_wrapper: NodeWrapper | None = None,
    ) -> LocalCluster:
        """The cluster already in `data_dir`, whatever its size (for tools that act on it)."""
        prepared = open_cluster_dir(data_dir)
        nodes = len(prepared.config.nodes)
        cluster = cls(data_dir, nodes, node_command=node_command, node_wrapper=node_wrapper)
        cluster._prepared = prepared
        return cluster

    def prepare(self) -> PreparedCluster:
        """Create the cluster directory, or reuse the one there (see prepare_cluster_dir)."""
        if self._prepared is None:
            self._prepared = prepare_cluster_dir(self.data_dir, self._nodes, self._overrides, self._hosts)
        return self._prepared

    def pid(self, node_id: str) -> int | None:
        """The node's running process: ours, or one found through its verified pid file."""
        proc = self._procs.get(node_id)
        if proc is not None and proc.poll() is None:
            return proc.pid
        return _pidfiles.verified_pid(self.pid_path(node_id), self.node_dir(node_id))

    def start(self) -> None:
        """Start every node; refuses (before starting any) if one is already running."""
        self.prepare()
        running = {n: pid for n in self.node_ids if (pid := self.pid(n)) is not None}
        if running:
            listed = ", ".join(f"{n} (pid {pid})" for n, pid in running.items())
            raise ClusterError(f"already running: {listed}; stop them first (`down`)")
        try:
            for node_id in self.node_ids:
                self.start_node(node_id)
        except ClusterError:
            self.stop()  # all or nothing: never leave part of a cluster running unnoticed
            raise

    def start_node(self, node_id: str) -> int:
        """Start one node in the background; returns its pid."""
        pid = self.pid(node_id)
        if pid is not None:
            raise ClusterError(f"node {node_id} is already running (pid {pid})")
        node_argv = list(self._node_command(self.config_path, node_id, self.node_dir(node_id)))
        argv = node_argv if self._node_wrapper is None else list(self._node_wrapper(node_id, node_argv))
        stamp = dt.datetime.now().isoformat(timespec="milliseconds")
        try:
            with self.log_path(node_id).open("ab") as log:
                log.write(f"--- {stamp} launcher: starting {node_id}: {shlex.join(argv)}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        except OSError as exc:
            raise ClusterError(f"cannot start node {node_id} ({shlex.join(argv)}): {exc}") from exc
        self._procs[node_id] = proc
        _pidfiles.write_pid_file(self.pid_path(node_id), proc.pid)
        # Popen returns while the kernel may still be building the new image, when
        # /proc/<pid>/cmdline reads empty. Wait until others can verify the pid file too.
        node_dir = self.node_dir(node_id)
        if not _pidfiles.wait_for(
            lambda: proc.poll() is not None or _pidfiles.is_node_process(proc.pid, node_dir), EXEC_TIMEOUT_S
        ):
            self._kill_if_running(node_id)
            raise ClusterError(
                f"node command for {node_id} must have {_pidfiles.NODE_MARKER!r} and {node_dir} among its "
                f"arguments (pid files are verified by them): {shlex.join(argv)}"
            )
        # A wrapper's own argv holds the marker too; wait until it has exec'd the node itself,
        # so the pid we signal from now on is the node's (a wrapper that forks never gets there).
        if self._node_wrapper is not None and not _pidfiles.wait_for(
            lambda: proc.poll() is not None or _pidfiles.cmdline(proc.pid) == node_argv, EXEC_TIMEOUT_S
        ):
            # The whole process group: it is this launch's own session, the forked node included.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._kill_if_running(node_id)
            raise ClusterError(
                f"node wrapper for {node_id} must exec the node command in its own process, "
                f"not run it as a child: {shlex.join(argv)}"
            )
        logger.info("started %s as pid %d", node_id, proc.pid)
        return proc.pid

    def kill(self, node_id: str) -> None:
        """SIGKILL the node and wait until it is gone; ClusterError if it is not running."""
        if not self._kill_if_running(node_id):
            raise ClusterError(f"node {node_id} is not running")

    def _kill_if_running(self, node_id: str) -> bool:
        proc = self._procs.pop(node_id, None)
        if proc is not None:
            _pidfiles.remove_pid_file(self.pid_path(node_id), proc.pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                return True
        pid = self.pid(node_id)
        if pid is None:
            return False
        _pidfiles.send(pid, signal.SIGKILL)
        if not _pidfiles.wait_for(lambda: not _pidfiles.is_running(pid), STOP_TIMEOUT_S):
            raise self._timeout(f"node {node_id} (pid {pid}) to die after SIGKILL", STOP_TIMEOUT_S)
        _pidfiles.remove_pid_file(self.pid_path(node_id), pid)
        return True

    def restart(self, node_id: str) -> int:
        """Kill the node if it runs (like a crash, not a clean stop), then start it; returns the pid."""
        self._kill_if_running(node_id)
        return self.start_node(node_id)

    def pause(self, node_id: str) -> None:
        """SIGSTOP the node (a frozen process: sockets open, nothing answered) and wait until stopped."""
        self._signal_and_wait(node_id, signal.SIGSTOP, lambda state: state == "T", "stopped (state T)")

    def resume(self, node_id: str) -> None:
        """SIGCONT a paused node and wait until it runs again."""
        self._signal_and_wait(node_id, signal.SIGCONT, lambda state: state != "T", "running again")

    def _signal_and_wait(
        self, node_id: str, sig: signal.Signals, done: Callable[[str | None], bool], what: str
    ) -> None:
        pid = self.pid(node_id)
        if pid is None:
            raise ClusterError(f"node {node_id} is not running")
        _pidfiles.send(pid, sig)
        if not _pidfiles.wait_for(lambda: done(_pidfiles.proc_state(pid)), SIGNAL_SETTLE_TIMEOUT_S):
            raise self._timeout(f"node {node_id} (pid {pid}) to be {what}", SIGNAL_SETTLE_TIMEOUT_S)

    def reap(self) -> dict[str, int]:
        """Nodes we started that have exited since the last look: id -> exit code (-N: signal N)."""
        exited = {n: code for n, p in self._procs.items() if (code := p.poll()) is not None}
        for node_id in exited:
            _pidfiles.remove_pid_file(self.pid_path(node_id), self._procs.pop(node_id).pid)
        return exited

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """Stop the nodes this object started: SIGTERM, then SIGKILL after `timeout_s`.

        Returns each one's exit code (0 is a clean stop). Other processes are never touched.
        """
        # Close our channels first: a node going away under an open channel makes gRPC log noise.
        self.close_channels()
        procs = dict(self._procs)
        self._procs.clear()
        for proc in procs.values():
            if proc.poll() is None:
                # SIGCONT too: a paused node would otherwise hold SIGTERM until the timeout.
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int] = {}
        for node_id, proc in procs.items():
            try:
                codes[node_id] = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.1fs of SIGTERM; killing it", node_id, timeout_s)
                proc.kill()
                codes[node_id] = proc.wait()
            if node_id in self.node_ids:  # not a node removed from the cluster meanwhile
                _pidfiles.remove_pid_file(self.pid_path(node_id), proc.pid)
        return codes

    def down(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int | None]:
        """stop(), then also stop this cluster's nodes known only from pid files.

        Returns id -> exit code for every node stopped (None where it was not our child).
        """
        codes: dict[str, int | None] = dict(self.stop(timeout_s))
        others = {n: pid for n in self.node_ids if (pid := self.pid(n)) is not None}
        killed = _pidfiles.terminate_all(list(others.values()), timeout_s)
        for node_id, pid in others.items():
            if pid in killed:
                logger.warning(
                    "%s (pid %d) did not stop within %.1fs of SIGTERM; killed", node_id, pid, timeout_s
                )
            _pidfiles.remove_pid_file(self.pid_path(node_id), pid)
            codes[node_id] = None
        return codes

    def detach(self) -> dict[str, int]:
        """Let the running nodes outlive this object (`up --detach`); returns id -> pid."""
        procs = dict(self._procs)
        self._procs.clear()
        pids = {n: p.pid for n, p in procs.items() if p.poll() is None}
        with warnings.catch_warnings():
            # Popen warns when dropped while its child runs; here that is the point.
            warnings.simplefilter("ignore", ResourceWarning)
            del procs
        return pids

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
