"""The embedded testbed: the tiny Countdown reasoning model shipped in the package and its build recipe."""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "testbed"


def shipped_model_dir() -> Path:
    if not (SHIPPED / "config.json").is_file():
        raise FileNotFoundError(f"the shipped testbed model is missing from {SHIPPED}; rebuild it with `antisd testbed build --out {SHIPPED}`")
    return SHIPPED
