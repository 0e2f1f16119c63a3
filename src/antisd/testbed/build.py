"""`antisd testbed build`: warm-start the tiny Countdown reasoning model from a seed.

Recipe (choices and why, see docs/testbed.md):
- tokenizer: byte-level BPE trained on the synthetic corpus (lossless decode, so any text round-trips);
- model: a standard Qwen3 causal LM (hidden 128, 4 layers, ~1M parameters) so every HF/TRL code path applies;
- data: synthetic *search* traces (random tries without replacement, ``wait`` lines, ``no`` verdicts), plus
  examples in the teacher-prompt format so the model learns to *use* privileged context the way a pretrained
  LLM would: after "Your previous attempt: <correct trace>" it answers with the attempt's solution, after an
  incorrect one it searches while avoiding the wrong answer, after feedback alone it searches;
- loss on response tokens only (training on the context block made the model write context blocks itself).

Run: ``antisd testbed build --seed 0 --out DIR``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from antisd.method.context import ContextTemplates, teacher_user_text
from antisd.tasks import countdown as cd

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class BuildConfig:
    """Warm-start of the embedded testbed model."""

    out: str = "runs/testbed-model"
    """Directory the model and tokenizer are written to."""
    seed: int = 0
    """Seed for data, initialisation and batch order: the same seed gives the same checkpoint."""
    steps: int = 1500
    """Optimizer steps of supervised training."""
    batch_size: int = 64
    """Examples per step."""
    lr: float = 2e-3
    """Peak learning rate (linear warm-up for 50 steps, cosine decay to 10%)."""
    p_context: float = 0.5
    """Fraction of examples in the teacher-prompt format (previous attempt and/or assessment)."""
    max_tries: int = 6
    """Each synthetic search gives up after a random number of failed tries in 1..max_tries, so that searching
    longer is something RL can discover pays off."""
    hidden_size: int = 128
    """Model width."""
    num_layers: int = 4
    """Transformer blocks."""
    vocab_size: int = 640
    """BPE vocabulary size (specials included)."""
    num_threads: int = 2
    """torch CPU threads."""
    style: str = "plain"
    """'plain' (the shipped v1 model: one wording) or 'varied' (v2, issue #12: several wordings of tries, verdicts and
    deliberation lines; after a correct previous attempt the response sometimes re-checks a wrong candidate first)."""
    p_recheck: float = 0.5
    """'varied' only: after a correct previous attempt, the share of responses that try 1-2 other candidates before
    the attempt's solution (else copy it in one try)."""
    p_hint_search: float = 0.0
    """'varied' only: after a correct previous attempt, the share of responses that are a *hinted search*: the
    student's search (same give-up process), each try being the attempt's solution with probability p_hint.
    Taken before p_recheck (0: off)."""
    p_hint: float = 0.5
    """Probability that a try of a hinted search is the known solution."""
    p_hint_wait: float = 0.3
    """Probability of a deliberation line before each later try of a hinted search (the student's searches use 0.3:
    lower means a teacher that knows the solution deliberates less, the effect the paper measures)."""
    p_mismatch: float = 0.0
    """'varied' only: share of teacher-prompt examples that show *another* problem's solution labelled correct,
    answered by a plain search (a pretrained LLM ignores an irrelevant solution; 0: off, as in v1 and v2a-c)."""
    p_fooled: float = 0.0
    """Of those mismatched examples, the share answered by copying the irrelevant solution (fooled by the label,
    as the v1 and v2a-c models always are); the rest search."""
    confident: bool = False
    """'varied' only: a teacher response's try of the *known* solution opens with a confident phrase
    (``clearly``, ``it must be``, ``surely``) instead of a hedging one (``maybe``, ``let me try``, ...): a solver that
    knows the answer does not hedge. False: every try hedges (v1, v2a-d)."""
    p_confident: float = 1.0
    """With ``confident``: the probability that a try of the known solution opens confidently (v2: 1, always). Below 1,
    what the teacher knows no longer shows in the opener alone but also in the numbers it writes after a hedge
    (issue #23: on v2 the whole PMI of a try sat on its first token)."""
    wording_skew: float = 0.0
    """'varied' only: Zipf skew of every wording choice, weights ∝ rank^−skew (0: uniform, v2; a uniform choice among
    k wordings puts the entropy at exactly ln k, the plateau v2's median teacher entropy sat on)."""

    def __post_init__(self):
        from antisd.infra import configio
        configio.check_at_least(self, {"steps": 1, "batch_size": 1, "max_tries": 1, "num_layers": 1, "num_threads": 1, "vocab_size": 300})
        configio.check_positive(self, ("lr",))
        configio.check_between(self, {name: (0.0, 1.0) for name in ("p_context", "p_recheck", "p_hint_search", "p_hint", "p_hint_wait", "p_mismatch", "p_fooled", "p_confident")})
        configio.check_between(self, {"wording_skew": (0.0, 4.0)})
        configio.check_choice(self, {"style": ("plain", "varied")})
        configio.check_seed(self)
        configio.check_nonempty(self, ("out",))
        if self.hidden_size < 32 or self.hidden_size % 32:
            raise ValueError(f"--hidden_size must be a positive multiple of 32 (attention heads of 32 dimensions), got {self.hidden_size}")


def _messages(user_text: str) -> list[dict]:
    return [{"role": "user", "content": user_text}]


def make_example(
    problem: cd.Problem, rng: random.Random, p_context: float, templates: ContextTemplates, max_tries: int = 6, varied: bool = False, p_recheck: float = 0.0,
    hint: tuple[float, float, float] | None = None, mismatch: tuple[float, float, list[cd.Problem]] | None = None, confident: float = 0.0,
    skew: float = 0.0,
) -> tuple[list[dict], str]:
    """One (prompt messages, response) pair: a plain search, or one of the teacher-prompt formats.

    ``hint`` = (share of hinted searches, p_hint, p_hint_wait); ``mismatch`` = (share, fooled share, pool of other
    problems); ``confident``: the probability that a try of the known solution opens with a confident phrase (v2:
    1, always; v1: 0); ``skew``: Zipf skew of the wording choices (:func:`antisd.tasks.countdown.word`)."""
    known = lambda: _known_openers(rng, confident)  # noqa: E731
    search = lambda avoid=None: cd.search_trace(problem, rng, max_tries=rng.randint(1, max_tries), avoid=avoid, varied=varied, skew=skew)  # noqa: E731
    if rng.random() >= p_context:
        return _messages(problem.prompt), search()[0]
    if mismatch is not None and rng.random() < mismatch[0]:  # another problem's solution: mostly ignore it, search
        other = rng.choice([q for q in rng.sample(mismatch[2], 4) if sorted(q.numbers) != sorted(problem.numbers)] or mismatch[2][:1])
        osol = rng.choice(cd.solutions(other))
        user = teacher_user_text(problem.prompt, _solved_trace(other, osol, rng, varied, skew), rng.choice([cd.CORRECT_FEEDBACK, cd.INCORRECT_FEEDBACK]), templates)
        if rng.random() < mismatch[1]:  # fooled: copies the irrelevant solution as if it were this problem's
            return _messages(user), f"{cd.try_line(osol, other, rng, known(), skew)}\nanswer: {cd.format_expr(osol)}"
        return _messages(user), search()[0]
    kind = rng.random()
    if kind < 0.6:  # a correct previous attempt: copy its solution in one try (or, varied, re-check first)
        sol = rng.choice(cd.solutions(problem))
        demonstration = _solved_trace(problem, sol, rng, varied, skew)
        user = teacher_user_text(problem.prompt, demonstration, rng.choice([cd.CORRECT_FEEDBACK, cd.INCORRECT_FEEDBACK]), templates)
        lines = []
        if varied and hint is not None and rng.random() < hint[0]:
            return _messages(user), _hinted_search(problem, sol, rng, max_tries, hint[1], hint[2], confident, skew)
        if varied and rng.random() < p_recheck:
            wrong = [e for e in cd.candidates(problem.numbers) if cd.evaluate(e) != problem.target]
            for expr in rng.sample(wrong, min(len(wrong), rng.randint(1, 2))):
                lines += [cd.deliberation_line(rng, True, skew)] if lines and rng.random() < 0.5 else []
                lines.append(cd.try_line(expr, problem, rng, skew=skew))
        lines.append(cd.try_line(sol, problem, rng, known(), skew) if varied else cd.try_line(sol, problem))
        return _messages(user), "\n".join(lines) + f"\nanswer: {cd.format_expr(sol)}"
    if kind < 0.8:  # an incorrect previous attempt: search again, avoiding its answer
        demonstration, solved = search()
        if solved:
            return _messages(problem.prompt), demonstration
        wrong = cd.parse_answer(demonstration)
        user = teacher_user_text(problem.prompt, demonstration, cd.INCORRECT_FEEDBACK, templates)
        return _messages(user), search(avoid=wrong)[0]
    user = teacher_user_text(problem.prompt, None, cd.INCORRECT_FEEDBACK, templates)  # feedback only
    return _messages(user), search()[0]


def _known_openers(rng: random.Random, confident: float) -> tuple[str, ...]:
    """The openers of a try of the known solution: confident with probability ``confident`` (no random draw at 0 or
    1, so the v1 and v2 recipes draw exactly what they drew before the knob existed)."""
    sure = confident >= 1.0 or (confident > 0.0 and rng.random() < confident)
    return cd.CONFIDENT_OPENERS if sure else cd.OPENERS


def _hinted_search(
    problem: cd.Problem, solution: cd.Expr, rng: random.Random, max_tries: int, p_hint: float, p_wait: float = 0.3, confident: float = 0.0, skew: float = 0.0,
) -> str:
    """The student's search with a hint: the same give-up process (1..max_tries tries), each try the known solution
    with probability ``p_hint`` (else an untried wrong candidate); it stops at the first hit. A teacher trained on
    this still gives up on a wrong try as often as the student does, so the commit token is not penalised."""
    wrong = [e for e in cd.candidates(problem.numbers) if cd.evaluate(e) != problem.target]
    rng.shuffle(wrong)
    lines, chosen = [], solution
    for k in range(rng.randint(1, max_tries)):
        expr = solution if rng.random() < p_hint or k >= len(wrong) else wrong[k]
        if k and rng.random() < p_wait:
            lines.append(cd.deliberation_line(rng, True, skew))
        lines.append(cd.try_line(expr, problem, rng, _known_openers(rng, confident) if expr == solution else cd.OPENERS, skew))
        chosen = expr
        if expr == solution:
            break
    return "\n".join(lines) + f"\nanswer: {cd.format_expr(chosen)}"


def _solved_trace(problem: cd.Problem, solution: cd.Expr, rng: random.Random, varied: bool = False, skew: float = 0.0) -> str:
    """A search trace that ends on ``solution`` (what a correct sibling rollout looks like)."""
    wrong = [e for e in cd.candidates(problem.numbers) if cd.evaluate(e) != problem.target]
    rng.shuffle(wrong)
    lines = []
    for expr in wrong[: rng.randint(0, 3)]:
        lines += [cd.deliberation_line(rng, varied, skew)] if lines and rng.random() < 0.3 else []
        lines.append(cd.try_line(expr, problem, rng if varied else None, skew=skew))
    lines.append(cd.try_line(solution, problem, rng if varied else None, skew=skew))
    lines.append(f"answer: {cd.format_expr(solution)}")
    return "\n".join(lines)


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token=None)
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>"]})
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(tokenizer, hidden_size: int, num_layers: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    heads = max(hidden_size // 32, 2)
    cfg = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(heads // 2, 1),
        head_dim=hidden_size // heads,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(cfg)


def encode(tokenizer, messages: list[dict], response: str) -> tuple[list[int], int]:
    """Prompt + response + eos ids, and the prompt length (the loss starts after it)."""
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return list(prompt_ids) + response_ids, len(prompt_ids)


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (seq, prompt_len) in enumerate(batch):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        labels[i, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:])
    return ids, attn, labels


def main(cfg: BuildConfig) -> Path:
    from antisd.infra import configio
    configio.check_output_dir(cfg.out, "--out")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads)
    rng = random.Random(cfg.seed)
    templates = ContextTemplates()

    # 1. Data: a pool of training problems (held-out triples never appear)
    varied, p_recheck = cfg.style == "varied", cfg.p_recheck if cfg.style == "varied" else 0.0
    hint = (cfg.p_hint_search, cfg.p_hint, cfg.p_hint_wait) if varied and cfg.p_hint_search > 0 else None
    problems = cd.generate(4000, seed=cfg.seed, split="train")
    mismatch = (cfg.p_mismatch, cfg.p_fooled, problems) if varied and cfg.p_mismatch > 0 else None
    confident = cfg.p_confident if varied and cfg.confident else 0.0
    skew = cfg.wording_skew if varied else 0.0
    example = lambda p: make_example(p, rng, cfg.p_context, templates, cfg.max_tries, varied, p_recheck, hint, mismatch, confident, skew)  # noqa: E731
    corpus = [example(p) for p in problems[:1500]]
    tok_texts = [m[0]["content"] + "\n" + r for m, r in corpus] + [cd.CORRECT_FEEDBACK, cd.INCORRECT_FEEDBACK]
    tokenizer = build_tokenizer(tok_texts, cfg.vocab_size)
    model = build_model(tokenizer, cfg.hidden_size, cfg.num_layers)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen3 {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}")

    # 2. Supervised warm start on fresh examples every step, response-only loss
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))))
    model.train()
    start = time.time()
    for step in range(cfg.steps):
        batch = [encode(tokenizer, *example(rng.choice(problems))) for _ in range(cfg.batch_size)]
        ids, attn, labels = collate(batch, tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - start:6.0f}s", flush=True)

    # 3. Save model, tokenizer and the recipe that made them
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "antisd_build.json").write_text(json.dumps(asdict(cfg) | {"params": n_params}, indent=2))
    print(f"saved to {out}; next: antisd testbed check --model {out}")
    return out
