"""Peak memory and time of per-token log-prob + entropy: chunked (antisd.core) vs a full float32 log-softmax.

Each method runs in its own fresh subprocess on the same bf16 logits; the script prints the measured peak-RSS
increase and wall time of both, and their ratios, from this one run.

    python benchmarks/logprob_memory.py --B 1 --T 4096 --V 151936   # Qwen3's vocabulary
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from antisd.core import logp_entropy_from_logits
B, T, V, method, save = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.manual_seed(0)
logits = torch.randn(B, T, V, dtype=torch.bfloat16)
ids = torch.randint(0, V, (B, T))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if method == "chunked":
    logp, ent = logp_entropy_from_logits(logits, ids, chunk_size=1024)
else:
    full = torch.log_softmax(logits.float(), dim=-1)
    logp = full.gather(-1, ids[..., None]).squeeze(-1)
    ent = -(full.exp() * full).sum(-1)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch.save({"logp": logp, "ent": ent}, save)
print(json.dumps({"method": method, "peak_mb": (peak - base) / 1024, "seconds": dt, "checksum": float(logp.double().sum() + ent.double().sum())}))
"""


def run(B: int, T: int, V: int, method: str, save: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(B), str(T), str(V), method, save], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--B", type=int, default=8)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--V", type=int, default=32000)
    a = p.parse_args()
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        chunked, full = run(a.B, a.T, a.V, "chunked", f"{tmp}/c.pt"), run(a.B, a.T, a.V, "full", f"{tmp}/f.pt")
        c, f = torch.load(f"{tmp}/c.pt"), torch.load(f"{tmp}/f.pt")
        diff = {k: (c[k] - f[k]).abs().max().item() for k in ("logp", "ent")}
    print(f"B={a.B} T={a.T} V={a.V}: logits {a.B * a.T * a.V * 2 / 2**20:.0f} MB in bf16")
    for r in (chunked, full):
        print(f"  {r['method']:8s} peak +{r['peak_mb']:8.1f} MB   {r['seconds']:6.2f} s   checksum {r['checksum']:.1f}")
    print(f"  max |chunked − full| per token: log-prob {diff['logp']:.2e}, entropy {diff['ent']:.2e}")
    print(f"  chunked/full: memory {chunked['peak_mb'] / full['peak_mb']:.3f}, time {chunked['seconds'] / full['seconds']:.3f}")


if __name__ == "__main__":
    main()
