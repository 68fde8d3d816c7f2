"""A private Ray head for the tests marked ``ray``, stopped by its own process ids.

It is started with ``--node-ip-address 127.0.0.1`` (Ray 2.x replaces a loopback address by the machine's
routable one and listens on every interface), so token authentication with a token of its own, given to
the head and to the test drivers only, is what keeps it private.

``ray stop`` would kill every Ray on the machine; this head is started in a session of its own, so its
processes are the members of that process group plus the worker processes its raylet forks (each in a
group of its own), found through their parent ids.  Token authentication stays on with a token of its
own, usage statistics and the dashboard are off.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


class RayHead:
    def __init__(self, cpus: int = 2):
        self.cpus = cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = tempfile.mkdtemp(prefix="mnnlite-ray-")
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        # the drivers and the head share the token; workers import this checkout's mnnlite
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32), "PYTHONPATH": path}
        self.group = None

    def start(self) -> "RayHead":
        ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
        assert ray_cli, "the ray extra is not installed (pip install '.[ray]')"
        log = open(os.path.join(self.temp, "start.log"), "wb")
        proc = subprocess.Popen([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1",
                                 "--port", str(self.port), "--num-cpus", str(self.cpus), "--disable-usage-stats",
                                 "--include-dashboard=false", "--temp-dir", self.temp],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.group = proc.pid
        code = proc.wait(timeout=180)
        log.close()
        if code != 0:
            self.stop()
            raise RuntimeError(f"ray start failed ({code}): {Path(self.temp, 'start.log').read_text()[-2000:]}")
        return self

    def pids(self) -> set[int]:
        """This head's live processes: its process group and, transitively, their children."""
        table = _processes()
        mine = {pid for pid, (_ppid, group, _state) in table.items() if group == self.group}
        grew = True
        while grew:
            more = {pid for pid, (ppid, _g, _s) in table.items() if ppid in mine and pid not in mine}
            mine |= more
            grew = bool(more)
        return {pid for pid in mine if table[pid][2] != "Z"}

    def worker_pids(self, title: str) -> list[int]:
        """Worker processes of this head whose title (``ray::<task name>``) starts with ``title``."""
        found = []
        for pid in self.pids():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(title):
                found.append(pid)
        # a child the task has just forked (before it execs) still carries the worker's title: keep only
        # the workers themselves, whose parent is not one of them
        return [pid for pid in found if _parent(pid) not in found]

    def stop(self, grace: float = 10.0) -> None:
        pids = self.pids() if self.group else set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                pids = self.pids()
                if not pids:
                    break
                time.sleep(0.2)
            if not pids:
                break
        shutil.rmtree(self.temp, ignore_errors=True)


def _parent(pid: int) -> int | None:
    """The parent process id of ``pid`` (from /proc), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])
