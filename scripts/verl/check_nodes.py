"""Before a verl run: can every node of the Ray cluster import the plug-in (issue #20)?

verl builds the trainer on a Ray actor that may land on any node; where ``antisd`` (or ``math_verify``, which its
rewards use) is not importable, verl only says "Unknown trainer 'antisd_sync'". This probe runs one task pinned to
each alive node, imports the modules there and names, per node, what is missing and the fix; exit status 1 if any.

    python3 scripts/verl/check_nodes.py             # against the running cluster (RAY_ADDRESS, default auto)
    python3 scripts/verl/check_nodes.py --local     # a throwaway local Ray instance (tests)
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys

MODULES = ("antisd", "antisd.integrations.verl.trainer", "math_verify")


def probe(modules: tuple[str, ...] = MODULES) -> dict:
    """On this node: the host name, the Python, and each module's version or the error importing it."""
    found, missing = {}, {}
    for name in modules:
        try:
            module = importlib.import_module(name)
            found[name] = getattr(module, "__version__", "ok")
        except Exception as e:  # noqa: BLE001 — any failure to import is what the probe reports
            missing[name] = f"{type(e).__name__}: {e}"
    return {"host": socket.gethostname(), "python": sys.executable, "found": found, "missing": missing}


def check_cluster(modules: tuple[str, ...] = MODULES) -> list[dict]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0)(probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)).remote(modules) for n in nodes]
    return ray.get(refs)


def report(results: list[dict]) -> tuple[str, bool]:
    lines, ok = [], True
    for r in results:
        if r["missing"]:
            ok = False
            lines.append(f"{r['host']}: MISSING " + "; ".join(f"{m} ({why})" for m, why in r["missing"].items())
                         + f" — install there with the same Python ({r['python']}): pip install --no-deps -e <antisd checkout>; pip install math-verify")  # fmt: skip
        else:
            lines.append(f"{r['host']}: ok ({', '.join(f'{m} {v}' for m, v in r['found'].items())})")
    return "\n".join(lines), ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--local", action="store_true", help="start a local Ray instance instead of joining a cluster")
    cfg = p.parse_args()
    import ray

    ray.init(address=None if cfg.local else os.environ.get("RAY_ADDRESS", "auto"), include_dashboard=False, log_to_driver=False)
    text, ok = report(check_cluster())
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
