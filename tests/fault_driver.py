"""`antisd train` killed (os._exit(137): no cleanup, no atexit, as SIGKILL) at one moment of one checkpoint save.

ANTISD_FAULT=STAGE and ANTISD_FAULT_STEP=N pick the moment, at the checkpoint of step N:
  model_before     before the model's files           model_inside   half of model.safetensors written
  optimizer_before after the model, before optimizer  optimizer_inside  half of optimizer.pt written
  state_before     before antisd_state.json           state_inside   a partial antisd_state.json temp file
  marker_before    before the completeness marker     marker_after   right after the marker (complete)
and, after training, before the run's final records (ANTISD_FAULT_STEP ignored):
  final_model_before   before final/ is written       summary_before   before summary.json
  finished_before      before run.json says finished
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from antisd import cli

from antisd.infra import rundir
from antisd.integrations.trl import AntiSDTrainer

STAGE, STEP = os.environ.get("ANTISD_FAULT", ""), int(os.environ.get("ANTISD_FAULT_STEP", "0"))


def die() -> None:
    sys.stdout.flush()
    os._exit(137)


def at_step(trainer) -> bool:
    return trainer.state.global_step == STEP


original_save_model, original_save_opt = AntiSDTrainer.save_model, AntiSDTrainer._save_optimizer_and_scheduler


def save_model(self, output_dir=None, _internal_call=False):
    if _internal_call and at_step(self) and STAGE == "model_before":
        die()
    if not _internal_call and STAGE == "final_model_before":
        die()
    result = original_save_model(self, output_dir, _internal_call)
    if _internal_call and at_step(self) and STAGE == "model_inside":
        path = Path(output_dir) / "model.safetensors"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        die()
    return result


def save_optimizer(self, output_dir):
    if at_step(self) and STAGE == "optimizer_before":
        die()
    result = original_save_opt(self, output_dir)
    if at_step(self) and STAGE == "optimizer_inside":
        path = Path(output_dir) / "optimizer.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        die()
    return result


original_write, original_mark = rundir.write_json_atomic, rundir.mark_complete


def write_json_atomic(path, obj):
    if Path(path).name == "summary.json" and STAGE == "summary_before":
        die()
    if Path(path).name == "run.json" and obj.get("finished") and STAGE == "finished_before":
        die()
    if Path(path).name == "antisd_state.json" and Path(path).parent.name == f"checkpoint-{STEP}":
        if STAGE == "state_before":
            die()
        if STAGE == "state_inside":
            Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}").write_text('{"gate": {"ste')
            die()
    return original_write(path, obj)


def mark_complete(folder, run_id, step):
    if step == STEP and STAGE == "marker_before":
        die()
    original_mark(folder, run_id, step)
    if step == STEP and STAGE == "marker_after":
        die()


AntiSDTrainer.save_model = save_model
AntiSDTrainer._save_optimizer_and_scheduler = save_optimizer
rundir.write_json_atomic = write_json_atomic
rundir.mark_complete = mark_complete

if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(cli.entry())  # the console script's error path: user errors exit 2 with one line
