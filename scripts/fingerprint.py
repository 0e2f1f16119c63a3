"""Seeded e2e runs through the CLI; dumps every [B,T] advantage tensor reaching TRL's loss and metrics.jsonl.

    python scripts/fingerprint.py OUT_DIR [BASELINE/fingerprint.json]

With a baseline (a fingerprint.json written by an earlier version), says whether every advantage and every metric
value is bit-identical, metric names mapped through METRICS_RENAMED (renames of #21)."""
import json, sys, hashlib
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import torch
from antisd import cli
from antisd.integrations.trl import AntiSDTrainer
from tiny import make_tiny_model

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
model = Path("/tmp/fp/tiny") if Path("/tmp/fp/tiny/config.json").exists() else make_tiny_model(Path("/tmp/fp/tiny"))
seen = []
orig = AntiSDTrainer._compute_loss
def cl(self, m, inputs):
    seen.append(inputs["advantages"].detach().clone())
    return orig(self, m, inputs)
AntiSDTrainer._compute_loss = cl
runs = {
  "release": ["--preset", "antisd_release", "--antisd_gate_warmup_steps", "1", "--antisd_gate_signal", "teacher_entropy_median", "--antisd_ppl_spike", "1e9"],
  "release_default": ["--preset", "antisd_release", "--antisd_gate_warmup_steps", "1"],
  "sd": ["--preset", "sd"], "antisd": ["--preset", "antisd", "--antisd_gate_warmup_steps", "1"],
  "grpo": ["--preset", "grpo"], "no_gate": ["--preset", "no_gate"], "mult": ["--preset", "multiplicative", "--antisd_gate_warmup_steps", "1"],
  "sd_jsd": ["--preset", "sd_jsd", "--antisd_gate_warmup_steps", "1"],
}
res = {}
for name, extra in runs.items():
    seen.clear()
    d = out / name
    argv = ["train", "--model", str(model), "--output_dir", str(d), "--prompts_per_step", "2", "--num_generations", "4",
            "--max_completion_length", "12", "--eval_k", "1", "--eval_problems", "2", "--save_steps", "1", "--steps", "3", *extra]
    assert cli.main(argv) == 0
    lines = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    for l in lines: l.pop("time", None); [l.pop(k) for k in list(l) if "runtime" in k or "per_second" in k or k.startswith("perf/")]
    res[name] = {"adv": [a.tolist() for a in seen], "metrics": lines}
(out / "fingerprint.json").write_text(json.dumps(res, sort_keys=True))
print(hashlib.sha256((out / "fingerprint.json").read_bytes()).hexdigest())

METRICS_RENAMED = {"antisd/demo_fraction": "antisd/demonstration_fraction", "antisd/demo_truncated": "antisd/demonstration_truncated"}
if len(sys.argv) > 2:
    base = json.loads(Path(sys.argv[2]).read_text())
    differ = []
    for name, old in base.items():
        new = res.get(name)
        rows = [{METRICS_RENAMED.get(k, k): v for k, v in l.items() if k != "time"} for l in old["metrics"]]
        if new is None or old["adv"] != new["adv"]:
            differ.append(f"{name}: advantages")
        elif json.dumps(rows, sort_keys=True) != json.dumps(new["metrics"], sort_keys=True):
            differ.append(f"{name}: metrics")
    print("bit-identical to the baseline on every run" if not differ else f"DIFFERENT: {differ}")
    sys.exit(1 if differ else 0)
