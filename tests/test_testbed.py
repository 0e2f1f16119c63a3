"""The testbed's context-use check conditions and the warm-start data."""

from __future__ import annotations

import random

from antisd.context import ContextTemplates
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
