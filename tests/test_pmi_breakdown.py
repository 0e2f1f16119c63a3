"""scripts/pmi_breakdown.py on hand-made tokens: classes by line position, Σ|φ(u)| from Eq. 6 by hand, the
deterministic and plateau position counts."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pmi_breakdown", ROOT / "scripts" / "pmi_breakdown.py")
pb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb)


def _phi(u: float) -> float:
    return 0.5 * (math.log(1 + math.exp(u)) - math.log(2))


def _rows(rollout: int, tokens: list[tuple[str, float, float]]) -> list[dict]:
    return [{"rollout": rollout, "position": i, "token": tok, "u": u, "h_teacher": h} for i, (tok, u, h) in enumerate(tokens)]


def test_breakdown_classes_and_phi_mass(tmp_path):
    rows = _rows(0, [("try", -2.0, 1.0), (" 4", 0.5, math.log(2)), (" +", 0.0, 0.01), (" 3", -1.0, 0.3), ("\n", 0.0, 0.0),
                     ("answer", 0.1, 0.0), (":", 0.0, 0.0), (" 7", 0.2, math.log(3) + 0.04)])
    rows += _rows(1, [("maybe", -3.0, 0.9), (" good", 0.3, 0.6), ("\nwait", -0.7, 0.5)])
    b = pb.breakdown(list(reversed(rows)))  # order of the file does not matter
    assert b["count"] == {"line opener": 3, "numbers/operators": 3, "other": 2, "answer line": 3}
    expected = {"line opener": [-2.0, -3.0, -0.7], "numbers/operators": [0.5, 0.0, -1.0], "other": [0.0, 0.3], "answer line": [0.1, 0.0, 0.2]}
    for cls, us in expected.items():
        assert math.isclose(b["mass"][cls], sum(abs(_phi(u)) for u in us), rel_tol=1e-12), cls
    assert b["deterministic"] == 4  # entropies 0.01, 0.0, 0.0, 0.0
    assert b["plateau"] == 2  # ln 2 exactly and ln 3 + 0.04
    path = tmp_path / "tokens.jsonl"
    path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "pmi_breakdown.py"), str(path)], capture_output=True, text=True, check=True).stdout
    assert "11 tokens" in out and "line opener" in out
