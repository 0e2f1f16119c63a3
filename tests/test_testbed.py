"""The testbed's context-use check conditions and the warm-start data."""

from __future__ import annotations

import math
import random
import re
import statistics

import pytest

from antisd.method.context import ContextTemplates
from antisd.tasks import countdown as cd
from antisd.testbed.build import make_example
from antisd.testbed.check import conditions


def test_check_conditions_carry_the_right_context():
    problems = cd.generate(5, seed=3, split="heldout")
    conds = conditions(problems, seed=0)
    for i, p in enumerate(problems):
        none = conds["none"][i].messages[0]["content"]
        good = conds["correct_attempt"][i].messages[0]["content"]
        bad = conds["incorrect_attempt"][i].messages[0]["content"]
        other = conds["mismatched"][i].messages[0]["content"]
        assert none == p.prompt
        attempt = good.split("Your previous attempt:\n\n")[1].split("\n\n")[0]
        assert cd.grade(attempt, p).reward == 1.0 and "Your answer is correct." in good
        assert cd.grade(bad.split("Your previous attempt:\n\n")[1].split("\n\n")[0], p).reward == 0.0
        mism = other.split("Your previous attempt:\n\n")[1].split("\n\n")[0]
        assert cd.grade(mism, problems[(i + 1) % 5]).reward == 1.0 and "Your answer is correct." in other
        assert all(c[i].row == {"numbers": list(p.numbers), "target": p.target} for c in conds.values())


def test_warm_start_examples_after_a_correct_attempt_copy_its_answer():
    rng = random.Random(0)
    seen = 0
    for p in cd.generate(300, seed=0):
        messages, response = make_example(p, rng, 1.0, ContextTemplates())
        user = messages[0]["content"]
        if "Your previous attempt:" in user:
            attempt = user.split("Your previous attempt:\n\n")[1].split("\n\n")[0]
            if cd.grade(attempt, p).reward == 1.0:
                assert cd.grade(response, p).reward == 1.0
                seen += 1
    assert seen > 50


def test_v2_options_confident_teacher_and_mismatched_solutions():
    """--confident: the teacher's try of the known solution opens confidently, every other try hedges;
    --p_mismatch/--p_fooled: another problem's solution is copied (fooled) or ignored (a search of this problem)."""
    rng = random.Random(1)
    problems = cd.generate(400, seed=0)
    confident, hedged, fooled, ignored = 0, 0, 0, 0
    for p in problems:
        messages, response = make_example(p, rng, 1.0, ContextTemplates(), 6, True, 0.0, (0.5, 0.75, 0.1), (0.3, 0.25, problems), True)
        user = messages[0]["content"]
        attempt = user.split("Your previous attempt:\n\n")[1].split("\n\n")[0] if "Your previous attempt:" in user else None
        tries = [line for line in response.splitlines() if not line.startswith("answer:") and line not in cd.DELIBERATION_LINES]
        if attempt is not None and cd.grade(attempt, p).reward == 1.0:  # the known solution: confident, the rest hedge
            for line in tries:
                known = line.endswith(tuple(cd.YES_WORDS))
                assert line.startswith(cd.CONFIDENT_OPENERS if known else cd.OPENERS), line
                confident, hedged = confident + known, hedged + (not known)
        elif attempt is not None and cd.parse_answer(attempt) and sorted(cd.parse_answer(attempt)[::2]) != sorted(p.numbers):
            copied = cd.parse_answer(response) == cd.parse_answer(attempt)
            fooled, ignored = fooled + copied, ignored + (not copied)
            assert copied or sorted(cd.parse_answer(response)[::2]) == sorted(p.numbers)
    assert confident > 50 and hedged > 20
    assert 0.1 < fooled / (fooled + ignored) < 0.45 and fooled + ignored > 20


def test_v3_options_partly_confident_teacher_and_skewed_wording():
    """--p_confident: a known-solution try opens confidently with that probability (1 draws nothing extra, so the
    v2 recipe's data are unchanged); --wording_skew: wording frequencies follow Zipf weights ∝ rank^−skew."""
    problems = cd.generate(600, seed=0)
    args = (1.0, ContextTemplates(), 6, True, 0.0, (0.5, 0.75, 0.1), None)
    first = [make_example(p, random.Random(i), *args, True) for i, p in enumerate(problems[:50])]
    assert first == [make_example(p, random.Random(i), *args, 1.0) for i, p in enumerate(problems[:50])]
    rng = random.Random(2)
    sure = known = 0
    for p in problems:
        messages, response = make_example(p, rng, *args, 0.5)
        user = messages[0]["content"]
        attempt = user.split("Your previous attempt:\n\n")[1].split("\n\n")[0] if "Your previous attempt:" in user else None
        if attempt is None or cd.grade(attempt, p).reward != 1.0:  # only a teacher that knows the solution is confident
            continue
        for line in response.splitlines():
            if line.endswith(tuple(cd.YES_WORDS)) and not line.startswith("answer:"):
                known, sure = known + 1, sure + line.startswith(cd.CONFIDENT_OPENERS)
    assert known > 150 and abs(sure / known - 0.5) < 0.1
    rng = random.Random(3)
    counts = {w: 0 for w in cd.EQUALS}
    for p in problems:
        _, response = make_example(p, rng, 0.0, ContextTemplates(), 6, True, skew=2.0)
        for verb in re.findall(r"\d (=|is|gives|makes) \d", response):
            counts[verb] += 1
    total = sum(counts.values())
    weights = [1.0, 1 / 4, 1 / 9, 1 / 16]
    for w, weight in zip(cd.EQUALS, weights):
        assert counts[w] / total == pytest.approx(weight / sum(weights), abs=0.03), counts
    assert cd.word(random.Random(0), ("a", "b"), 0.0) == random.Random(0).choice(("a", "b"))  # skew 0: the old draw


def test_shipped_model_loads_offline_and_writes_traces():
    import json

    import torch

    from antisd.infra.models import load_model
    from antisd.testbed import shipped_model_dir

    model, tok = load_model("testbed")
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert sum(f.stat().st_size for f in shipped_model_dir().iterdir()) < 25 * 2**20
    recipe = json.loads((shipped_model_dir() / "antisd_build.json").read_text())
    assert recipe["seed"] == 0 and recipe["max_tries"] == 6
    problems = cd.generate(16, seed=0, split="heldout")
    prompts = [tok.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False) for p in problems]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=128, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    # a warm-started model writes well-formed traces with an answer line; a random one would not
    assert sum(cd.parse_answer(t) is not None for t in texts) >= 14
    assert all(t.startswith("try ") for t in texts)


@pytest.mark.parametrize("name", ["testbed-v2", "testbed-v3"])
def test_shipped_varied_models_are_the_documented_recipe_and_search(name):
    """testbed-v2 (issue #12) and testbed-v3 (issue #23): each one's recipe is the one docs/testbed.md and its
    protocol amendment name, and it writes varied search traces that end in an answer line."""
    import json
    from pathlib import Path

    import torch

    from antisd.infra.models import load_model, shipped_model_dir

    recipe = json.loads((shipped_model_dir(name) / "antisd_build.json").read_text())
    documented = Path(__file__).resolve().parents[1] / "docs" / "testbed.md"
    command = next(line for line in documented.read_text().splitlines() if line.startswith("antisd testbed build") and f"{name} " in line + " ")
    flags = dict(zip(command.split()[3::2], command.split()[4::2]))
    for flag, value in flags.items():
        if flag != "--out":
            assert str(recipe[flag[2:]]).lower() == value.lower(), (flag, recipe[flag[2:]], value)
    model, tok = load_model(name)
    problems = cd.generate(16, seed=0, split="heldout")
    prompts = [tok.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False) for p in problems]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, max_new_tokens=128, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert sum(cd.parse_answer(t) is not None for t in texts) >= 14
    assert len({t.split()[0] for t in texts}) >= 3  # varied openers, not one template


def test_testbed_build_cli_is_deterministic_for_a_seed(tmp_path):
    from safetensors.torch import load_file

    from antisd import cli
    args = ["--steps", "3", "--batch_size", "4", "--hidden_size", "32", "--num_layers", "1", "--vocab_size", "300"]
    for name in ("a", "b"):
        assert cli.main(["testbed", "build", "--seed", "7", "--out", str(tmp_path / name), *args]) == 0
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_regime_properties_on_hand_made_measurements():
    from antisd.testbed.check import regime_properties, skewness

    pass1 = {"none": 0.25, "correct_attempt": 0.60, "incorrect_attempt": 0.2, "mismatched": 0.24}
    u = [0.1, 0.0, -0.2, -6.0, 0.05, -0.1]
    tokens = [{"u": v, "h_teacher": h, "h_student": 0.5} for v, h in zip(u, [0.05, 0.2, 0.3, 0.1, 0.15, 0.01])]
    stats = {"categories": {"deliberation": {"u": {"mean": -0.4}, "u_minus_control": {"mean": 0.1}}, "structural": {"u": {"mean": 0.0}, "u_minus_control": {"mean": 0.0}}}}
    props = {p.name: p for p in regime_properties(pass1, tokens, stats)}
    assert props["pass@1 alone"].ok and props["pass@1 with a correct attempt / alone"].value == pytest.approx(2.4)
    assert props["pass@1 with a mismatched solution − alone"].ok  # −0.01: no better than alone
    median_h = props["median teacher entropy (nats, T = 1)"]
    assert median_h.value == pytest.approx(0.125) and not median_h.ok  # issue #23's range is [0.2, 1.0]
    assert props["its distance from the nearest plateau ln 2..4"].value == pytest.approx(math.log(2) - 0.125)
    h = sorted([0.05, 0.2, 0.3, 0.1, 0.15, 0.01])
    assert props["teacher entropy, 25th percentile"].value == pytest.approx(statistics.quantiles(h, n=4, method="inclusive")[0])
    assert props["teacher entropy, 90th percentile"].value == pytest.approx(0.25)  # between 0.2 and 0.3, halfway
    # φ(u) = ½(ln(1 + e^u) − ln 2) token by token; mean |φ| here is dominated by u = −6 (|φ| ≈ 0.345)
    phi_ref = [0.5 * (math.log1p(math.exp(v)) - math.log(2)) for v in u]
    assert props["mean |φ(u)| per token"].value == pytest.approx(sum(map(abs, phi_ref)) / 6) and props["mean |φ(u)| per token"].ok
    assert props["P(u < −1)"].value == pytest.approx(1 / 6) and props["P(u < −5)"].value == pytest.approx(1 / 6)
    assert props["skewness of u"].value == pytest.approx(skewness(u)) and props["skewness of u"].ok
    assert props["min u"].value == -6.0 and props["mean u: deliberation − structural"].ok
    assert not props["mean u − u_control: deliberation − structural"].ok  # +0.1: the control-corrected polarity fails
    assert not regime_properties(pass1 | {"none": 0.1, "correct_attempt": 0.15}, tokens, stats)[0].ok
    # a teacher on the ln 2 plateau (testbed-v2: median 0.697) is in the entropy range but fails the plateau distance;
    # a small dose (|u| ≤ 0.05 everywhere) fails mean |φ(u)| and P(u < −1)
    flat = [{"u": 0.05 * (-1) ** i, "h_teacher": 0.69 + 0.01 * (i % 3), "h_student": 0.7} for i in range(30)]
    props = {p.name: p for p in regime_properties(pass1, flat, stats)}
    assert props["median teacher entropy (nats, T = 1)"].ok and not props["its distance from the nearest plateau ln 2..4"].ok
    assert not props["mean |φ(u)| per token"].ok and not props["P(u < −1)"].ok
    # skewness by hand: a left tail is negative
    assert skewness([0.0, 0.0, 0.0, -3.0]) < 0 < skewness([0.0, 0.0, 0.0, 3.0])
