"""PMI diagnostics (paper §3, Fig. 2): token statistics of u = log π_T − log π_S and a self-contained HTML report.

Everything here works on plain per-token records, so a training run, a notebook or `antisd pmi` can use it:
:func:`token_records` flattens scored rollouts, :func:`statistics_of` aggregates them (top tokens, categories
with 95% intervals, asymmetry, the advantage each variant would give a category), :func:`render_html` writes
the report. The HTML has no external scripts, styles or fonts; every model-generated string is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from antisd.core import get_signal, release_signal

DELIBERATION = ("wait", "let", "maybe", "alternatively", "hmm", "but", "actually", "perhaps", "try", "no", "check", "suppose")
STRUCTURAL = ("given", "assign", "holds", "succeeds", "therefore", "thus", "so", "hence", "yes", "answer", "final", "=")
VARIANTS = ("sd", "sd_jsd", "antisd", "antisd_release")


@dataclass(frozen=True)
class TokenRecord:
    rollout: int
    position: int
    token: str
    u: float
    u_control: float
    p_student: float
    p_teacher: float
    h_student: float
    h_teacher: float
    advantage: dict  # variant -> per-token signal that variant would apply (before λ)


def normalise(token: str) -> str:
    return token.strip().lower().strip(".,:;!?")


def variant_signals(u_BT: torch.Tensor, s_BT: torch.Tensor, mask_BT: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-token signal of each variant: sd +u, sd_jsd +φ(u), antisd −φ(u), antisd_release its z-score."""
    m = mask_BT.bool()
    out = {name: torch.where(m, get_signal(name)(u_BT, s_BT), 0.0) for name in ("sd", "sd_jsd", "antisd")}
    out["antisd_release"] = release_signal(u_BT, s_BT, m, get_signal("antisd"), sigma_ref=None, len_mask=None)
    return out


def token_records(tokens: list[list[str]], s_BT, t_BT, c_BT, hs_BT, ht_BT, mask_BT) -> list[TokenRecord]:
    """Flatten [B, T] student (s), teacher (t), control-teacher (c) log-probs and entropies into records."""
    u_BT = (t_BT - s_BT).float()
    signals = variant_signals(u_BT, s_BT.float(), mask_BT)
    records = []
    for i, row in enumerate(tokens):
        for j, tok in enumerate(row):
            if not mask_BT[i, j]:
                continue
            records.append(
                TokenRecord(
                    i, j, tok, u_BT[i, j].item(), (t_BT[i, j] - c_BT[i, j]).item(), math.exp(s_BT[i, j].item()),
                    math.exp(t_BT[i, j].item()), hs_BT[i, j].item(), ht_BT[i, j].item(),
                    {k: v[i, j].item() for k, v in signals.items()},
                )  # fmt: skip
            )
    return records


def mean_ci(values: list[float]) -> dict:
    """Mean with a normal-approximation 95% half-width (1.96·sd/√n); n < 2 gives NaN width."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "ci95": float("nan")}
    sd = statistics.stdev(values) if n > 1 else float("nan")
    return {"n": n, "mean": statistics.fmean(values), "ci95": 1.96 * sd / math.sqrt(n) if n > 1 else float("nan")}


def rollout_bootstrap(records: list, value=lambda r: r.u, resamples: int = 1000, seed: int = 0) -> dict:
    """Token-weighted mean of ``value`` with a 95% interval from a bootstrap over *rollouts*.

    Tokens within one rollout are correlated, so a token-level normal interval is too narrow; resampling whole
    rollouts (with replacement) and recomputing the token-weighted mean gives the honest interval. ``ci95`` is
    half the 2.5–97.5 percentile width; ``lo``/``hi`` are the percentiles. Fewer than 2 rollouts: NaN width.
    """
    import random

    by_rollout: dict[int, list[float]] = {}
    for r in records:
        by_rollout.setdefault(r.rollout, []).append(value(r))
    n = sum(len(v) for v in by_rollout.values())
    if n == 0:
        return {"n": 0, "n_rollouts": 0, "mean": float("nan"), "ci95": float("nan"), "lo": float("nan"), "hi": float("nan")}
    sums = [(sum(v), len(v)) for v in by_rollout.values()]
    mean = sum(s for s, _ in sums) / n
    if len(sums) < 2:
        return {"n": n, "n_rollouts": len(sums), "mean": mean, "ci95": float("nan"), "lo": float("nan"), "hi": float("nan")}
    rng = random.Random(seed)
    boots = []
    for _ in range(resamples):
        pick = [sums[rng.randrange(len(sums))] for _ in sums]
        boots.append(sum(s for s, _ in pick) / sum(c for _, c in pick))
    boots.sort()
    lo, hi = boots[int(0.025 * resamples)], boots[int(0.975 * resamples) - 1]
    return {"n": n, "n_rollouts": len(sums), "mean": mean, "ci95": (hi - lo) / 2, "lo": lo, "hi": hi}


def asymmetry(values: list[float]) -> dict:
    if not values:
        return {}
    neg = [v for v in values if v < 0]
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "frac_neg": len(neg) / len(values),
        "frac_below_-5": sum(v < -5 for v in values) / len(values),
        "mass_below_-5": sum(v for v in values if v < -5) / len(values),
        "min": min(values),
        "max": max(values),
    }


def statistics_of(records: list[TokenRecord], categories: dict[str, tuple[str, ...]], skip_first: int = 8, min_count: int = 5, top: int = 15) -> dict:
    """Aggregate token records: asymmetry, categories (all tokens and with the first ``skip_first`` excluded),
    top/bottom tokens by mean u, and the mean signal each variant gives each category."""
    by_token: dict[str, list[TokenRecord]] = {}
    for r in records:
        by_token.setdefault(normalise(r.token), []).append(r)
    ranked = [(tok, statistics.fmean(x.u for x in rs), statistics.fmean(x.u_control for x in rs), len(rs)) for tok, rs in by_token.items() if len(rs) >= min_count and tok]
    ranked.sort(key=lambda x: x[1])
    cats = {}
    for name, words in categories.items():
        members = [r for r in records if normalise(r.token) in words]
        late = [r for r in members if r.position >= skip_first]
        cats[name] = {
            "words": list(words),
            "u": rollout_bootstrap(members),
            "u_minus_control": rollout_bootstrap(members, lambda r: r.u_control),
            "u_late": rollout_bootstrap(late),
            "u_minus_control_late": rollout_bootstrap(late, lambda r: r.u_control),
            "advantage": {v: mean_ci([r.advantage[v] for r in members])["mean"] for v in VARIANTS},
        }
    as_row = lambda x: {"token": x[0], "mean_u": x[1], "mean_u_minus_control": x[2], "count": x[3]}  # noqa: E731
    return {
        "n_tokens": len(records),
        "n_rollouts": len({r.rollout for r in records}),
        "u": asymmetry([r.u for r in records]),
        "u_minus_control": asymmetry([r.u_control for r in records]),
        "categories": cats,
        "most_negative": [as_row(x) for x in ranked[:top]],
        "most_positive": [as_row(x) for x in ranked[::-1][:top]],
        "skip_first": skip_first,
    }


def density_png(records: list[TokenRecord], path) -> None:
    """Fig. 2b: 2-D histogram of sampled tokens in (π_S, π_T) space, log colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(5, 4.5))
    xs, ys = [r.p_student for r in records], [r.p_teacher for r in records]
    h = ax.hist2d(xs, ys, bins=40, range=[[0, 1], [0, 1]], norm=LogNorm(), cmap="viridis")
    fig.colorbar(h[3], ax=ax, label="tokens")
    ax.plot([0, 1], [0, 1], "w--", lw=0.8)
    ax.set_xlabel("π_S (student)")
    ax.set_ylabel("π_T (teacher)")
    ax.set_title("sampled tokens: above diagonal u > 0")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colour(u: float, scale: float = 3.0) -> str:
    """Diverging red (u > 0, shortcut) / blue (u < 0, deliberation) background."""
    x = max(-1.0, min(1.0, u / scale))
    if x >= 0:
        return f"rgba(220,40,40,{0.85 * x:.3f})"
    return f"rgba(40,90,220,{0.85 * -x:.3f})"


# Bidi overrides/isolates and other invisible controls can reorder what a reader sees inside a rollout block;
# they are replaced by a visible marker before escaping (newline and tab stay: they are rendered).
_CONTROLS = {c for c in range(0x20) if c not in (0x09, 0x0A)} | {0x7F} | set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def _mark_controls(text: str) -> str:
    return "".join(f"⟦U+{ord(ch):04X}⟧" if ord(ch) in _CONTROLS else ch for ch in text)


def _esc(text: str) -> str:
    return html.escape(_mark_controls(str(text)))


def _span(r: TokenRecord) -> str:
    title = f"u={r.u:.3f} u−u_ctrl={r.u_control:.3f} π_S={r.p_student:.3f} π_T={r.p_teacher:.3f} H_S={r.h_student:.2f} H_T={r.h_teacher:.2f}"
    text = _esc(r.token).replace("\n", "↵<br>")
    return f'<span class="tok" style="background:{_colour(r.u)}" title="{_esc(title)}" data-u="{r.u:.4f}">{text}</span>'


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def render_html(title: str, records: list[TokenRecord], stats: dict, density_png_path, rollout_headers: dict[int, str], max_rollouts: int = 12) -> str:
    png = base64.b64encode(Path(density_png_path).read_bytes()).decode()
    by_rollout: dict[int, list[TokenRecord]] = {}
    for r in records:
        by_rollout.setdefault(r.rollout, []).append(r)
    blocks = []
    for i in sorted(by_rollout)[:max_rollouts]:
        spans = "".join(_span(r) for r in by_rollout[i])
        blocks.append(f'<div class="rollout"><div class="hdr">{_esc(rollout_headers.get(i, f"rollout {i}"))}</div><div class="toks">{spans}</div></div>')
    cat_rows = []
    for name, c in stats["categories"].items():
        row = {"category": name, "n": c["u"]["n"], "mean u": c["u"]["mean"], "±95%": c["u"]["ci95"], "mean u−u_ctrl": c["u_minus_control"]["mean"],
               "±95% ": c["u_minus_control"]["ci95"], f"mean u (pos ≥ {stats['skip_first']})": c["u_late"]["mean"]}  # fmt: skip
        row |= {f"A[{v}]": c["advantage"][v] for v in VARIANTS}
        cat_rows.append(row)
    asym = [{"quantity": k, **v} for k, v in (("u", stats["u"]), ("u − u_control", stats["u_minus_control"]))]
    css = (
        "body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0 20px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}th{background:#f3f3f3}"
        ".rollout{margin:10px 0;padding:8px;border:1px solid #ddd}.hdr{font-size:12px;color:#555;margin-bottom:4px}"
        ".toks{font-family:monospace;font-size:13px;line-height:1.9;white-space:pre-wrap}.tok{border-radius:2px}"
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{css}</style></head><body>
<h1>{_esc(title)}</h1>
<p>u = log π_T − log π_S per sampled token (the PMI between the token and the privileged context). Red: u &gt; 0
(the context makes the token more likely: "shortcut"); blue: u &lt; 0 (less likely: "deliberation"). Hover a
token for its values. u_ctrl is the same rollout scored by a control teacher whose context is another problem's
solution with the same feedback line; u − u_ctrl removes the generic effect of a longer prompt.</p>
<h2>Asymmetry</h2>{_table(asym, ["quantity", "n", "mean", "frac_neg", "frac_below_-5", "mass_below_-5", "min", "max"])}
<h2>Categories</h2><p>A[variant]: the mean per-token signal that variant would apply to the category (before λ).</p>
{_table(cat_rows, list(cat_rows[0]) if cat_rows else [])}
<h2>Density of sampled tokens (Fig. 2b)</h2><img id="density" alt="density of (pi_S, pi_T)" src="data:image/png;base64,{png}">
<h2>Most negative mean u</h2>{_table(stats["most_negative"], ["token", "count", "mean_u", "mean_u_minus_control"])}
<h2>Most positive mean u</h2>{_table(stats["most_positive"], ["token", "count", "mean_u", "mean_u_minus_control"])}
<h2>Rollouts (Fig. 2a)</h2>{"".join(blocks)}
</body></html>
"""


def records_as_json(records: list[TokenRecord]) -> list[dict]:
    return [asdict(r) for r in records]
