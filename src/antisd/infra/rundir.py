"""A run directory owned by one run: a lock while it runs, a run id, complete checkpoints only (stdlib only).

- ``run.json`` holds the run id, the AntiSD settings the run started with, and whether it finished (written
  atomically: a temporary file, fsync, rename).
- A checkpoint counts only when its completeness marker ``antisd_complete.json`` exists, names this run, and every
  file it lists has the size it records. The marker is written last, atomically, after the framework's files and
  the AntiSD state; a process killed at any moment before leaves a checkpoint without it, which resume skips.
- ``.lock`` is held with ``flock`` for the whole run: a second run into the same directory is refused at once,
  and a killed run never leaves a stale lock (the kernel drops it with the process).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

RUN_FILE = "run.json"
MARKER = "antisd_complete.json"
LOCK = ".lock"


class RunDirError(ValueError):
    """A user error about the output directory (one clear line, no traceback, nothing changed)."""


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


STATE_FILE = "antisd_state.json"  # the step's state (gate, σ_ref, warm PPL) in every checkpoint, written by both adapters


def write_step_state(folder: Path, state: dict) -> None:
    """The AntiSD step's ``state_dict()`` into a checkpoint folder."""
    write_json_atomic(Path(folder) / STATE_FILE, state)


def read_step_state(folder: Path, writer: str) -> dict:
    """The AntiSD step's state from a checkpoint folder; a missing or damaged file is named (``writer``: who writes it)."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the checkpoint is incomplete or was not written by {writer}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is damaged ({e})") from None


def read_run(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); it was not written by antisd train or was damaged") from None


def checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N directories, newest first."""
    found = [p for p in Path(run_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: -int(p.name.split("-")[-1]))


def mark_complete(folder: Path, run_id: str, step: int) -> None:
    """Write the completeness marker of a checkpoint whose files are all written (call it last)."""
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != MARKER and not p.name.startswith(".")}
    write_json_atomic(Path(folder) / MARKER, {"run_id": run_id, "step": step, "files": files})


def why_incomplete(folder: Path, run_id: str) -> str | None:
    """None if the checkpoint is complete and belongs to ``run_id``, else the reason."""
    marker = Path(folder) / MARKER
    if not marker.exists():
        return "no completeness marker (the save was interrupted)"
    try:
        info = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "unreadable completeness marker"
    if info.get("run_id") != run_id:
        return f"written by another run ({info.get('run_id')})"
    for name, size in info.get("files", {}).items():
        path = Path(folder) / name
        if not path.exists() or path.stat().st_size != size:
            return f"{name} is missing or truncated"
    return None


def last_complete(run_dir: Path, run_id: str) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint of this run, and one line for each newer one that was skipped."""
    skipped = []
    for folder in checkpoints(run_dir):
        reason = why_incomplete(folder, run_id)
        if reason is None:
            return folder, skipped
        skipped.append(f"skipped {folder.name}: {reason}")
    return None, skipped


def prune(run_dir: Path, run_id: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints of this run, and the incomplete ones older than the
    newest complete one (left by killed saves; resume skips them). The newest complete checkpoint is never deleted;
    ``keep`` 0 deletes nothing. Returns the names deleted."""
    if keep <= 0:
        return []
    complete = [c for c in checkpoints(run_dir) if why_incomplete(c, run_id) is None]
    if not complete:
        return []
    newest = int(complete[0].name.split("-")[-1])
    doomed = complete[keep:] + [c for c in checkpoints(run_dir) if c not in complete and int(c.name.split("-")[-1]) < newest]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return sorted(c.name for c in doomed)


class Lock:
    """An exclusive flock on ``run_dir/.lock`` for the life of this object's process (or until release)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise RunDirError(f"another run is writing to {run_dir} (pid {holder}); wait for it, or choose another --output_dir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self, remove: bool = False) -> None:
        if remove and self.created:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def claim(run_dir: Path, *, resume: bool, overwrite: bool, settings: dict) -> tuple[Lock, dict]:
    """Lock the directory and decide whose it is. Returns (lock, run record). Refuses, changing nothing, when a
    new run would land on another run's files, or a resume finds no run here."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--output_dir {run_dir} is a file, not a directory")
    if resume and not (run_dir / RUN_FILE).exists():
        raise RunDirError(f"--resume true but {run_dir} holds no run (no {RUN_FILE}); start it without --resume")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = Lock(run_dir)
    except PermissionError:
        raise RunDirError(f"--output_dir {run_dir} is not writable") from None
    try:
        run = read_run(run_dir)
        others = checkpoints(run_dir) or (run_dir / "metrics.jsonl").exists()
        if resume:
            return lock, run
        if (run is not None or others) and not overwrite:
            owner = f"run {run['run_id']}" if run else "files of an earlier run"
            raise RunDirError(f"{run_dir} already holds {owner} ({len(checkpoints(run_dir))} checkpoints): continue it with --resume true, or replace it with --overwrite true")
        if overwrite:
            for path in [*checkpoints(run_dir), run_dir / "final"]:
                shutil.rmtree(path, ignore_errors=True)
            for name in ("metrics.jsonl", "summary.json", "plots.png", "config.yaml", "README.md", RUN_FILE):
                (run_dir / name).unlink(missing_ok=True)
        run = {"run_id": uuid.uuid4().hex[:12], "antisd": settings, "finished": False, "steps": 0}
        write_json_atomic(run_dir / RUN_FILE, run)
        return lock, run
    except BaseException:
        lock.release(remove=True)
        raise


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the lines of ``metrics.jsonl`` with step ≤ ``step`` (a resumed run writes the later ones again);
    an unparseable (torn) line is dropped. Returns the number of lines removed."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, removed = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            removed += 1
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
        else:
            removed += 1
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(x + "\n" for x in kept))
    os.replace(tmp, path)
    return removed
