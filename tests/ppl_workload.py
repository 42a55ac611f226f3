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
