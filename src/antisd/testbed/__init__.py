"""The embedded testbed: the tiny Countdown reasoning model shipped in the package and its build recipe."""

from __future__ import annotations

from antisd.infra.models import SHIPPED_TESTBED as SHIPPED
from antisd.infra.models import shipped_model_dir

__all__ = ["SHIPPED", "shipped_model_dir"]
