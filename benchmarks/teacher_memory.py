"""Memory and update cost of the three teacher sources (issue #21), each in a fresh process.

    .venv/bin/python benchmarks/teacher_memory.py --model smollm2-135m

For each of live, frozen and ema (and ema offloaded), a child process loads the model, reads every weight once
(memory-mapped weights count in the resident set only once touched), builds an AntiSDTrainer with that teacher and
reports: the resident set size before and after building the trainer, the bytes of the
teacher's own weights (0 for live), the bytes a checkpoint's ``antisd_teacher.safetensors`` takes, and the median
time of the EMA update over 20 calls. One line per source and the differences to live, all from this one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, statistics, sys, tempfile, time
from pathlib import Path
import psutil, torch
torch.set_num_threads(2)
from datasets import Dataset
from antisd.infra.models import load_model
from antisd.integrations.trl import AntiSDConfig, AntiSDTrainer
from antisd.method.settings import preset
name, teacher, offload = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rss = lambda: psutil.Process().memory_info().rss
model, tok = load_model(name)
with torch.no_grad():  # page the (memory-mapped) weights in first: building the trainer would count them otherwise
    touched = sum(float(p.sum()) for p in model.parameters())
before = rss()
args = AntiSDConfig(output_dir=tempfile.mkdtemp(), max_steps=1, per_device_train_batch_size=4, num_generations=4, report_to="none",
                    use_cpu=True, antisd=preset("antisd").replace(teacher=teacher, teacher_offload=offload))
trainer = AntiSDTrainer(model=model, reward_funcs=[lambda completions, **k: [0.0] * len(completions)], args=args,
                        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}] * 4), processing_class=tok)
after = rss()
source = trainer.antisd_teacher
own = sum(p.numel() * p.element_size() for p in source.model.parameters()) if source.keeps_weights else 0
times = []
for _ in range(20):
    start = time.perf_counter(); source.after_optimizer_step(trainer.model); times.append(time.perf_counter() - start)
folder = Path(tempfile.mkdtemp()); source.save(folder)
saved = sum(f.stat().st_size for f in folder.iterdir())
policy = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
print(json.dumps({"teacher": teacher + (" (offload)" if offload else ""), "rss_build_gb": (after - before) / 1e9, "teacher_weights_gb": own / 1e9,
                  "policy_weights_gb": policy / 1e9, "checkpoint_file_gb": saved / 1e9, "update_ms": 1e3 * statistics.median(times)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="testbed")
    p.add_argument("--out", default="runs/bench-teacher-memory")
    cfg = p.parse_args()
    rows = []
    for teacher, offload in (("live", "0"), ("frozen", "0"), ("ema", "0"), ("ema", "1")):
        done = subprocess.run([sys.executable, "-c", CHILD, cfg.model, teacher, offload], capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    live = rows[0]
    lines = [f"model {cfg.model}: policy weights {live['policy_weights_gb']:.3f} GB (fp32)",
             f"{'teacher':16s} {'RSS of building the trainer':>28s} {'teacher weights':>16s} {'checkpoint file':>16s} {'update (median)':>16s}"]  # fmt: skip
    for r in rows:
        lines.append(f"{r['teacher']:16s} {r['rss_build_gb']:25.3f} GB {r['teacher_weights_gb']:13.3f} GB {r['checkpoint_file_gb']:13.3f} GB {r['update_ms']:13.2f} ms")
    for r in rows[1:]:
        lines.append(f"{r['teacher']:16s} − live: RSS {r['rss_build_gb'] - live['rss_build_gb']:+.3f} GB "
                     f"(teacher weights / policy weights = {r['teacher_weights_gb'] / live['policy_weights_gb']:.3f})")  # fmt: skip
    print("\n".join(lines))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher_memory.json").write_text(json.dumps(rows, indent=2))
    (out / "teacher_memory.md").write_text("```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
