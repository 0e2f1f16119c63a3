"""PMI diagnostic: u from hand-computed probabilities, category aggregation, HTML safety, the CLI outputs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch

from antisd import cli

from antisd.evaluation import pmi_report as pmi
from antisd.evaluation.scoring import score


class BigramModel(torch.nn.Module):
    """Logits at position i depend only on token i: a [V, V] table. Enough to compute probabilities by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        return SimpleNamespace(logits=self.table[input_ids][:, -logits_to_keep:])


@pytest.mark.exact
def test_u_matches_hand_computed_probabilities():
    # vocabulary {0, 1, 2}; token 0 is the student's last prompt token, token 2 the teacher's (its "context")
    model = BigramModel([[0.0, 0.0, 0.0], [math.log(3), 0.0, 0.0], [0.0, math.log(4), 0.0]])
    # after 0: uniform, p(1) = 1/3;  after 2: p(1) = 4/6 = 2/3;  after 1: p(0) = 3/5
    s, hs, mask = score(model, [[0]], [[1, 0]], pad_id=0)
    t, ht, _ = score(model, [[0, 2]], [[1, 0]], pad_id=0)
    torch.testing.assert_close(s[0], torch.tensor([math.log(1 / 3), math.log(3 / 5)]))
    torch.testing.assert_close(t[0], torch.tensor([math.log(2 / 3), math.log(3 / 5)]))
    u = t - s
    assert u[0, 0].item() == pytest.approx(math.log(2))  # the context doubles the token's probability
    assert u[0, 1].item() == pytest.approx(0.0, abs=1e-6)  # same history afterwards: no information
    assert hs[0, 0].item() == pytest.approx(math.log(3))  # uniform over 3
    assert ht[0, 0].item() == pytest.approx(-(2 / 3) * math.log(2 / 3) - 2 * (1 / 6) * math.log(1 / 6))
    assert mask.tolist() == [[True, True]]


@pytest.mark.exact
def test_score_pads_ragged_rows_without_leaking():
    model = BigramModel([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    a, _, _ = score(model, [[0], [1, 2, 0]], [[1, 2, 2], [1]], pad_id=0, batch_size=2)
    b, _, _ = score(model, [[1, 2, 0]], [[1]], pad_id=0)
    torch.testing.assert_close(a[1, :1], b[0])
    assert a[1, 1:].tolist() == [0.0, 0.0]


def _records():
    s = torch.log(torch.tensor([[0.5, 0.5, 0.9, 0.2], [0.5, 0.8, 0.1, 0.3]]))
    t = torch.log(torch.tensor([[0.25, 0.9, 0.9, 0.4], [0.1, 0.8, 0.05, 0.3]]))
    c = torch.log(torch.tensor([[0.5, 0.45, 0.9, 0.4], [0.1, 0.8, 0.1, 0.3]]))
    h = torch.ones(2, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    tokens = [[" Wait", " Given", "x", " wait"], ["Wait", "<b>", " given", "unused"]]
    return pmi.token_records(tokens, s, t, c, h, h, mask)


def test_category_aggregation():
    records = _records()
    assert len(records) == 7  # the masked token is absent
    stats = pmi.statistics_of(records, {"deliberation": ("wait",), "structural": ("given",)}, skip_first=1, min_count=1)
    d = stats["categories"]["deliberation"]
    # wait tokens: u = ln(.25/.5), ln(.4/.2), ln(.1/.5)
    want = [math.log(0.5), math.log(2.0), math.log(0.2)]
    assert d["u"]["n"] == 3 and d["u"]["mean"] == pytest.approx(sum(want) / 3)
    assert d["u_late"]["n"] == 1 and d["u_late"]["mean"] == pytest.approx(math.log(2.0))  # position ≥ 1 only
    # u − u_ctrl = log π_T − log π_control: ln(.25/.5), ln(.4/.4), ln(.1/.1)
    assert d["u_minus_control"]["mean"] == pytest.approx(math.log(0.5) / 3)
    g = stats["categories"]["structural"]
    assert g["u"]["mean"] == pytest.approx((math.log(1.8) + math.log(0.5)) / 2)
    assert g["advantage"]["sd"] == pytest.approx(g["u"]["mean"], abs=1e-6)  # sd's signal is u itself
    assert g["advantage"]["antisd"] == pytest.approx(-statistics_phi_mean([math.log(1.8), math.log(0.5)]))
    assert stats["u"]["frac_neg"] == pytest.approx(3 / 7)


def statistics_phi_mean(us):
    return sum(0.5 * (math.log1p(math.exp(u)) - math.log(2)) for u in us) / len(us)


def test_html_escapes_model_output(tmp_path):
    records = _records()
    evil = pmi.TokenRecord(0, 9, '<script>alert("x")</script>', -1.0, 0.0, 0.5, 0.2, 1.0, 1.0, {v: 0.0 for v in pmi.VARIANTS})
    stats = pmi.statistics_of(records + [evil], {"d": ("wait",)}, min_count=1)
    png = tmp_path / "d.png"
    pmi.density_png(records, png)
    page = pmi.render_html("t <img src=x onerror=alert(1)>", records + [evil], stats, png, {0: "<i>header</i>"})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page and "<i>header</i>" not in page
    assert 'id="density"' in page and page.count('class="tok"') == 8



def test_category_interval_is_a_bootstrap_over_rollouts():
    """Issue #10 item 13: tokens within a rollout are correlated; the interval resamples whole rollouts."""
    def rec(rollout, u):
        return pmi.TokenRecord(rollout, 0, " Wait", u, 0.0, 0.5, 0.5, 1.0, 1.0, {v: 0.0 for v in pmi.VARIANTS})

    # 2 rollouts of 50 identical tokens each: the token-level interval is tiny, the honest one is not
    records = [rec(0, -1.0) for _ in range(50)] + [rec(1, 1.0) for _ in range(50)]
    boot = pmi.rollout_bootstrap(records)
    naive = pmi.mean_ci([r.u for r in records])
    assert boot["mean"] == pytest.approx(0.0) and boot["n_rollouts"] == 2
    assert boot["lo"] == pytest.approx(-1.0) and boot["hi"] == pytest.approx(1.0)  # resamples {-1,-1}, {1,1}, mixed
    assert boot["ci95"] > 5 * naive["ci95"]
    assert math.isnan(pmi.rollout_bootstrap(records[:50])["ci95"])  # one rollout: no interval
    stats = pmi.statistics_of(records, {"deliberation": ("wait",)}, min_count=1)
    assert stats["categories"]["deliberation"]["u"] == boot


def test_html_marks_bidi_controls_and_nul(tmp_path):
    evil = pmi.TokenRecord(0, 0, "abc\u202egnp.exe\u0000\u2066x", -1.0, 0.0, 0.5, 0.2, 1.0, 1.0, {v: 0.0 for v in pmi.VARIANTS})
    pmi.density_png(_records(), tmp_path / "d.png")
    page = pmi.render_html("t\u202e", [evil], pmi.statistics_of([evil], {}, min_count=1), tmp_path / "d.png", {0: "h\u2067"})
    for ch in ("\u202e", "\u0000", "\u2066", "\u2067"):
        assert ch not in page
    assert "U+202E" in page and "U+0000" in page


class _Tok:
    eos_token_id = 9

    def __len__(self):
        return 10

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(c) for c in text]}


def test_rollouts_file_keeps_token_ids_and_never_appends_eos_to_truncated(tmp_path):
    """Issue #10 item 12: scored tokens are the sampled ones; an EOS that was never sampled is never scored."""
    from antisd.commands.pmi import read_rollouts

    f = tmp_path / "r.jsonl"
    f.write_text('{"problem": 1, "completion_ids": [3, 4, 5]}\n{"problem": 0, "completion": "12", "truncated": true}\n{"problem": 0, "completion": "7"}\n')
    assert read_rollouts(f, 2, _Tok()) == [(0, [1, 2]), (0, [7, 9]), (1, [3, 4, 5])]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"problem": 5, "completion": "1"}', r"r.jsonl:1: 'problem' must be an index in 0..1"),
        ('{"problem": -1, "completion": "1"}', r"r.jsonl:1: 'problem' must be an index in 0..1"),
        ('{"problem": 0}', r"r.jsonl:1: needs 'completion_ids'"),
        ('{"problem": 0, "completion_ids": [99]}', r"r.jsonl:1: 'completion_ids' must be"),
        ("{not json", r"r.jsonl:1: not valid JSON"),
    ],
)
def test_rollouts_file_errors_name_the_line(tmp_path, line, message):
    from antisd.commands.pmi import read_rollouts

    f = tmp_path / "r.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_rollouts(f, 2, _Tok())


def test_problems_cover_a_whole_file_task(tmp_path):
    """Issue #10 item 11: a .jsonl task holds out 10% of its rows; --problems and indices reach the rest."""
    from antisd.commands.pmi import _problems
    from antisd.tasks import load_task

    f = tmp_path / "m.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(20)))
    task = load_task(str(f))
    assert len(task.heldout) == 2
    items = _problems(task, 15)
    assert [it.row["answer"] for it in items] == [str(i) for i in range(15)]  # file order, no gap, no repeat


@pytest.mark.slow
def test_pmi_cli_outputs_and_renders_in_chromium(tmp_path, capsys):
    from tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "pmi"
    assert cli.main(["pmi", "--model", str(model), "--problems", "4", "--G", "2", "--max_new_tokens", "12", "--output_dir", str(out)]) == 0
    assert f"open {out / 'pmi.html'}" in capsys.readouterr().out  # what to open next
    stats = json.loads((out / "pmi.json").read_text())
    assert stats["n_tokens"] == sum(1 for _ in (out / "tokens.jsonl").open()) > 0
    assert (out / "density.png").stat().st_size > 1000
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: .ci/run should have installed it")
        pytest.skip("chromium is not installed (.ci/run installs it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([browser, *flags, "--dump-dom", (out / "pmi.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="tok"') == stats["n_tokens"] and 'id="density"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", (out / "pmi.html").as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 50  # text, colours and the plot: far from uniform
