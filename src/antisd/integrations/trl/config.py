"""``AntiSDConfig``: TRL's ``GRPOConfig`` plus one field, ``antisd``, the method's settings object.

The settings (:class:`antisd.method.settings.AntiSDSettings`) are the same object every framework and command carries;
presets are instances of it: ``AntiSDConfig(output_dir="out", antisd=preset("antisd_release"))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from antisd.method.settings import AntiSDSettings


@dataclass
class AntiSDConfig(GRPOConfig):
    antisd: AntiSDSettings = field(default_factory=AntiSDSettings, metadata={"help": "AntiSD settings (antisd.method.settings.AntiSDSettings; presets: antisd.method.settings.PRESETS)."})
    score_batch_size: int | None = field(default=None, metadata={"help": "Rows per no-grad scoring forward of the teacher (and a separate student forward); None: per_device_train_batch_size. The log-prob head holds [rows × length × V] floats, so a smaller value lowers the step's peak memory without changing the result."})
    score_student_separately: bool = field(default=False, metadata={"help": "Score the student with a separate no-grad forward at generation time instead of taking the training forward's detached log-probs (the pre-#13 path; for checks)."})
    keep_complete_checkpoints: int = field(default=0, metadata={"help": "With a run id (antisd train): after each checkpoint's completeness marker, delete all but the newest N complete checkpoints of the run and the incomplete ones older than the newest complete one (0: keep all). Unlike TRL's save_total_limit, which prunes before the marker is written (a kill then could leave no complete checkpoint), this never deletes the newest complete one."})

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and not torch.cuda.is_available():
            self.bf16 = False  # TRL defaults to bf16, which transformers refuses without a GPU: fp32 on a CPU-only machine
        super().__post_init__()
        if isinstance(self.antisd, dict):  # from a JSON/YAML round trip of to_dict()
            self.antisd = AntiSDSettings(**self.antisd)
        if not isinstance(self.antisd, AntiSDSettings):
            raise TypeError(f"antisd must be an AntiSDSettings, got {type(self.antisd).__name__}")
        if self.keep_complete_checkpoints < 0:
            raise ValueError(f"keep_complete_checkpoints must be ≥ 0 (0: keep all), got {self.keep_complete_checkpoints}")

    def to_dict(self):
        # TrainingArguments.to_dict keeps field values as they are; the settings object is written as a plain dict
        # so that to_json_string (TensorBoard, the Hub card) works.
        d = super().to_dict()
        d["antisd"] = dataclasses.asdict(self.antisd)
        return d
