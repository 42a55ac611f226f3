"""A lower-is-better workload for tests: digits-mlp scored by perplexity (exp of the mean cross-entropy of its
class scores), the metric a language model reports. Reference: ``tests/ppl_workload.py:workload``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compression_core import Metric, Workload, resolve_workload


def perplexity(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean cross-entropy): 1 for a perfect model, the number of classes for a uniform one."""
    return float(torch.exp(F.cross_entropy(outputs.float().reshape(-1, outputs.shape[-1]), targets.reshape(-1))))


PERPLEXITY = Metric("perplexity", perplexity, percent=False, higher_is_better=False)


def workload() -> Workload:
    base = resolve_workload("digits-mlp")
    return Workload(name="digits-mlp-ppl", model=base.model, train=(base.train.x, base.train.y),
                    calib=(base.calib.x, base.calib.y), test=(base.test.x, base.test.y), metric=PERPLEXITY,
                    classifier=base.classifier, description="digits-mlp scored by perplexity (lower is better)")


# ------------------------------------------------------------------------------------- a tiny language model
LM_NAME = "test-lm"


def lm_perplexity(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean cross-entropy per token) of logits (N, T, vocab) against next tokens (N, T)."""
    return perplexity(outputs, targets)


LM_PERPLEXITY = Metric("perplexity", lm_perplexity, percent=False, higher_is_better=False)


def lm_generate(model, prompt: str, max_new_tokens: int = 16) -> str:
    """Greedy continuation of a prompt of token ids written as ``t12 t7``: the same words back."""
    from compression_core import inputs as I
    ids = [int(w[1:]) for w in prompt.split() if w[:1] == "t" and w[1:].isdigit()] or [0]
    start = len(ids)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = I.call(model, torch.tensor([ids[-15:]]))[0, -1]  # (vocab,)
            ids.append(int(logits.argmax()))
    return " ".join(f"t{i}" for i in ids[start:])


def lm_workload() -> Workload:
    """The zoo's random Hugging Face GPT-2 (Conv1D, tied lm_head) scored by perplexity on its successor-table token
    sequences: every position's next token is a target."""
    from zoo import _gpt2_model, _seeded, lm_tokens
    tr, cal, te = lm_tokens()
    split = [(ids[:, :-1], ids[:, 1:]) for ids, _ in (tr, cal, te)]
    return Workload(name=LM_NAME, model=_seeded(_gpt2_model), train=split[0], calib=split[1], test=split[2],
                    metric=LM_PERPLEXITY, classifier="lm_head", info=LM_INFO,
                    description="a random GPT-2 scored by perplexity (tests)")


LM_INFO = {"metric": "perplexity", "percent": False, "higher_is_better": False, "generate": lm_generate,
           "architecture": "GPT-2 2x4 heads, d128 (random, tests)"}
