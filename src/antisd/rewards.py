"""Math reward with feedback: the final ``\\boxed{}`` answer checked against the gold answer with math-verify.

A response is correct only if its final answer is marked with ``\\boxed{}``; numbers in free text are not
answers. The gold answer is parsed first. (A hardened grader with bounded timeouts in worker processes is
planned with the math-reasoning work.)
"""

from __future__ import annotations

CORRECT = "Your answer is correct."
INCORRECT = "Your answer is incorrect."


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed{") - 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def math_grade(text: str, gold: str) -> tuple[float, str]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    boxed = last_boxed(text)
    if boxed is None:
        return 0.0, INCORRECT
    gold_parsed = parse(f"${gold}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()])
    if not gold_parsed:
        raise ValueError(f"gold answer {gold!r} cannot be parsed")
    pred = parse(f"$\\boxed{{{boxed}}}$", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)])
    ok = bool(pred) and verify(gold_parsed, pred)
    return (1.0, CORRECT) if ok else (0.0, INCORRECT)
