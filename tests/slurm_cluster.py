"""A real single-node SLURM (munged, slurmctld, slurmd on localhost) started for the test session.

Everything lives in one folder under ``$TMPDIR/taskeval-slurm/``: a generated ``slurm.conf`` (found by
the clients through ``SLURM_CONF``), a fresh munge key and socket (``AuthInfo=socket=...``), state,
spool, logs and pid files, and free TCP ports, so nothing in ``/etc`` or ``/run`` is touched and two
sessions on one machine do not meet. Settings that work in an unprivileged container without systemd or
cgroups: ``proctrack/linuxproc``, ``task/none``, ``jobacct_gather/none``, ``select/cons_tres`` with
``CR_CPU``; no ``slurmdbd``, hence no accounting and no ``sacct``.

A session whose pytest process is gone (killed, crashed) leaves its daemons behind; the next start stops
them (by the pids in their pid files, after checking that the process belongs to that folder) and removes
the folder. Daemons are always stopped by process id, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM or munge is not installed, or this process may not run them (not root)."""


class SlurmStartError(RuntimeError):
    """The daemons are installed but did not start; the message carries the tail of their logs."""


@dataclass
class LocalSlurm:
    """A running single-node cluster: ``env`` holds what a client needs (``SLURM_CONF``)."""

    root: Path
    conf: Path
    partition: str = PARTITION
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster (text output)."""
        return subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=check, timeout=30)

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.root / f"{name}.log"
            if path.is_file():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self, timeout: float = 10.0, cancel_jobs: bool = True) -> None:
        """Cancel this cluster's jobs, stop its daemons by pid, kill stray job processes, remove root."""
        if cancel_jobs and self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            self.run("scancel", "--quiet", f"--user={os.getuid()}", check=False)
        for name in reversed(DAEMONS):  # slurmd first: it still talks to slurmctld while shutting down
            pid = self.pids.get(name) or _read_pid(self.root / f"{name}.pid")
            if pid and _belongs(pid, self.root):
                _terminate(pid, timeout)
        for pid in _processes_of(self.root):  # slurmstepd and job steps outlive a stopped slurmd
            _terminate(pid, timeout)
        shutil.rmtree(self.root, ignore_errors=True)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not reaped) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _belongs(pid: int, root: Path) -> bool:
    """Whether process ``pid`` was started for ``root`` (its command line or environment names it).

    Guards against a pid from a stale pid file that the kernel has since given to another process.
    """
    key = str(root).encode()
    for part in ("cmdline", "environ"):
        try:
            if key in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
        except OSError:
            continue
    return False


def _processes_of(root: Path) -> list[int]:
    """Pids of live processes whose environment points at ``root``'s slurm.conf (job steps, slurmstepd)."""
    me = os.getpid()
    key = f"SLURM_CONF={root}/".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if key in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmStartError("MemTotal not found in /proc/meminfo")


def base_dir() -> Path:
    return Path(tempfile.gettempdir()) / "taskeval-slurm"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); '' if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(root: Path) -> bool:
    """Whether the process that started ``root``'s session still runs (same pid and start time).

    A folder without a readable owner file counts as alive for a minute: another session may be
    creating it right now.
    """
    try:
        pid, started = (root / "owner.pid").read_text().split()
        return _alive(int(pid)) and _start_time(int(pid)) == started
    except (OSError, ValueError):
        try:
            return time.time() - root.stat().st_mtime < 60
        except OSError:
            return False


def clean_stale(base: Path) -> list[Path]:
    """Stop the daemons of sessions whose owner process is gone and remove their folders; returns them."""
    removed = []
    if not base.is_dir():
        return removed
    for root in sorted(base.iterdir()):
        if _owner_alive(root):
            continue
        LocalSlurm(root=root, conf=root / "slurm.conf").stop(timeout=5.0)
        removed.append(root)
    return removed


def slurm_conf(root: Path, ports: list[int], cpus: int, memory_mb: int, user: str) -> str:
    """The slurm.conf text for one node ``localhost`` with ``cpus`` CPUs, everything under ``root``."""
    return f"""\
ClusterName=taskeval{ports[0]}
SlurmctldHost=localhost
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job (begin time = now + cred_expire + 1; default 120 s)
AuthInfo=socket={root}/munge.socket,cred_expire=5
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# fast turnaround for tests: short kill grace, main and backfill scheduler passes every second (a job
# whose begin time passes, e.g. a requeued one, waits for the next pass)
KillWait=2
SchedulerParameters=sched_min_interval=0,sched_interval=1,bf_interval=1
# finished jobs stay visible to squeue/scontrol this long (seconds); there is no accounting to ask later
MinJobAge=600
InactiveLimit=0
# slurmd takes CPUs and memory from this file, not from the hardware (containers misreport both)
SlurmdParameters=config_overrides
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def start(cpus: int | None = None, timeout: float = 30.0) -> LocalSlurm:
    """Start munged, slurmctld and slurmd in a fresh folder and wait until the node is idle.

    Raises:
        SlurmUnavailable: a binary is missing, or this process is not root.
        SlurmStartError: a daemon did not start or the node did not become idle within ``timeout`` s;
            everything started is stopped again and the message holds the logs' tails.
    """
    missing = [n for n in DAEMONS + CLIENTS if _which(n) is None]
    if missing:
        raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmd and munged need root to launch jobs in this setup")
    base = base_dir()
    base.mkdir(mode=0o755, exist_ok=True)
    clean_stale(base)
    root = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
    root.chmod(0o755)  # munged insists that the socket's folder is reachable by everyone
    (root / "owner.pid").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, _free_ports(2), cpus or os.cpu_count() or 1, _memory_mb(), user))
    cluster = LocalSlurm(root=root, conf=conf)
    env = {**os.environ, **cluster.env}
    commands = {
        "munged": [_which("munged"), "--force", f"--socket={root}/munge.socket", f"--key-file={key}",
                   f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                   f"--seed-file={root}/munged.seed"],
        "slurmctld": [_which("slurmctld"), "-i"],
        "slurmd": [_which("slurmd"), "-N", "localhost"],
    }
    try:
        for name in DAEMONS:
            # each daemonises: the command returns once the daemon has forked and written its pid file
            proc = subprocess.run(commands[name], env=env, capture_output=True, text=True, timeout=timeout,
                                  check=False)
            if proc.returncode != 0:
                raise SlurmStartError(f"{name} exited with {proc.returncode}: {proc.stderr.strip()}")
            pid = _wait_for_pid(root / f"{name}.pid", timeout)
            if pid is None:
                raise SlurmStartError(f"{name} wrote no pid file {name}.pid in {root} within {timeout:.0f} s")
            cluster.pids[name] = pid
        _wait_idle(cluster, timeout)
    except BaseException as exc:
        detail = cluster.log_tails()
        cluster.stop(timeout=5.0, cancel_jobs=False)
        if isinstance(exc, (SlurmStartError, subprocess.SubprocessError)):
            raise SlurmStartError(f"{exc}\n{detail}") from exc
        raise
    return cluster


def _wait_for_pid(path: Path, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _read_pid(path)
        if pid is not None and _alive(pid):
            return pid
        time.sleep(0.02)
    return None


def _wait_idle(cluster: LocalSlurm, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        for name, pid in cluster.pids.items():
            if not _alive(pid):
                raise SlurmStartError(f"{name} (pid {pid}) died after starting")
        proc = cluster.run("sinfo", "--noheader", "--nodes=localhost", "--format=%t", check=False)
        state = proc.stdout.strip() or proc.stderr.strip()
        if state == "idle":
            return
        time.sleep(0.1)
    reason = cluster.run("sinfo", "--noheader", "--list-reasons", check=False).stdout.strip()
    raise SlurmStartError(f"node localhost not idle within {timeout:.0f} s (state {state!r}; {reason})")
