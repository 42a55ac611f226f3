"""Int8 embeddings: each row of an embedding table stored as int8 codes with one float32 scale per row (symmetric,
round to nearest), dequantized only for the rows a batch looks up.

Why: in a small transformer the token-embedding table is a large share of the parameters (MiniLM-L6: 11.7 M of
22.7 M), and int8 of the Linear layers alone leaves it in float, which caps the file at ~0.6x. A lookup reads a
few rows, so dequantizing them costs nothing measurable. Row-wise scales are the scheme of "8-bit optimizers via
block-wise quantization" (Dettmers et al. 2022) applied to a lookup table, as in FBGEMM's 8-bit rowwise
embeddings (``torch.ao``'s ``QuantizedEmbedding``, which only runs inside quantized graphs and is slower here).

Tied weights (Press & Wolf 2017; GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) are quantized together:
the output layer becomes a ``TiedInt8Linear`` that reads the embedding's own int8 codes and row scales (the same
tensors, so the file holds them once; a row scale of the table is a per-output-channel scale of the layer).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CompressionError
from ..linear_like import tied_partners
from ..targets import resolve_targets
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ._common import set_submodule

_TINY = 1e-12  # an all-zero row gets this scale (its codes are zero)


class Int8Embedding(nn.Module):
    """An ``nn.Embedding`` whose table is int8 codes (rows, dim) and float32 row scales (rows,).

    ``forward(ids)`` gathers the rows' codes and scales and returns ``codes * scale`` in the scales' dtype (float32,
    or the model's half dtype after ``quantize_half``: buffers follow ``.to(dtype)``, the int8 codes stay int8)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings, dtype=torch.float32))

    @classmethod
    @torch.no_grad()
    def from_float(cls, emb: nn.Embedding, name: str = "embedding") -> "Int8Embedding":
        if emb.max_norm is not None:
            raise CompressionError(f"targets: {name!r} renormalises looked-up rows (max_norm={emb.max_norm}), which "
                                   "int8 codes cannot do; leave it out with ignore")
        w = emb.weight.detach().float()  # (rows, dim)
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=_TINY)  # (rows,)
        q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)  # (rows, dim)
        mod = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        mod.qweight.copy_(q)
        mod.scale.copy_(scale)
        return mod

    def dequantized_weight(self) -> torch.Tensor:
        """The float table (rows, dim) the lookups return: codes x row scale."""
        return self.qweight.to(self.scale.dtype) * self.scale[:, None]  # (rows, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        codes = F.embedding(ids, self.qweight)  # (..., dim) int8
        scale = F.embedding(ids, self.scale[:, None])  # (..., 1)
        return codes.to(scale.dtype) * scale  # (..., dim)

    def layer_stats(self) -> dict:
        n = self.qweight.numel()
        return {"params": n, "nonzero": int((self.qweight != 0).sum()), "dtype": "int8", "bits": 8,
                "simulated": False}

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rowwise{pad}"


class TiedInt8Linear(nn.Module):
    """An output Linear whose weight was tied to an embedding table, after that table became an ``Int8Embedding``:
    its ``qweight`` (out, in) int8 and ``scale`` (out,) buffers ARE the embedding's (one copy in the state_dict and
    the file), and ``forward`` computes ``x @ (codes x scale).T + bias``: weight-only int8, dequantized per call."""

    def __init__(self, emb: Int8Embedding, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = emb.embedding_dim, emb.num_embeddings
        self.register_buffer("qweight", emb.qweight)  # the same tensor as the embedding's
        self.register_buffer("scale", emb.scale)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight (out, in) the layer computes with: codes x row scale."""
        return self.qweight.to(self.scale.dtype) * self.scale[:, None]  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), b)  # (..., in) -> (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 rowwise, tied to an embedding"


def _tie(model: nn.Module, name: str, emb: nn.Embedding, q: Int8Embedding) -> list[str]:
    """Make every module sharing ``emb``'s weight read ``q``'s codes instead (in place); returns their names. A
    partner that cannot is a one-line refusal: quantizing the table alone would store the matrix twice."""
    done = []
    for partner in tied_partners(model).get(name, []):
        mod = model.get_submodule(partner)
        if isinstance(mod, nn.Linear) and mod.weight is emb.weight:
            set_submodule(model, partner, TiedInt8Linear(q, mod.bias))
        elif isinstance(mod, nn.Embedding) and mod.weight is emb.weight and mod.max_norm is None:
            twin = Int8Embedding(mod.num_embeddings, mod.embedding_dim, mod.padding_idx)
            twin.qweight, twin.scale = q.qweight, q.scale  # the same tensors
            set_submodule(model, partner, twin)
        else:
            raise CompressionError(f"targets: {name!r} shares its weight with {partner!r} ({type(mod).__name__}, "
                                   "tied), which quantize_embedding cannot make read the same int8 codes; quantizing "
                                   "the table alone would store the matrix twice: leave it out with ignore")
        done.append(partner)
    return done


class EmbeddingInt8Config(StepConfig):
    """Int8 (row-wise scales) of the ``nn.Embedding`` layers selected by ``targets`` (None = all) minus ``ignore``."""

    kind: Literal["quantize_embedding"] = "quantize_embedding"
    ui = TechniqueUI(family="quantize", label="int8 embeddings (real)",
                     layer_types=("Embedding",), storage="int8", order=60)
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()


@register(EmbeddingInt8Config)
def _embedding_int8(model: nn.Module, cfg: EmbeddingInt8Config, ctx: StepContext) -> nn.Module:
    names = resolve_targets(model, cfg.targets, cfg.ignore, types=(nn.Embedding,), field="targets")
    if not names:
        raise CompressionError("targets: quantize_embedding found no nn.Embedding layer in this model; it applies to "
                               "models with embedding tables (token ids in)")
    for i, name in enumerate(names):
        emb = model.get_submodule(name)
        if not isinstance(emb, nn.Embedding):
            continue  # already quantized together with an embedding it is tied to
        q = Int8Embedding.from_float(emb, name)
        tied = _tie(model, name, emb, q)
        set_submodule(model, name, q)
        shared = f", shared with {', '.join(tied)} (tied: they read the same codes)" if tied else ""
        ctx.report((i + 1) / len(names), f"{name}: int8 rowwise{shared}")
    return model.eval()


__all__ = ["EmbeddingInt8Config", "Int8Embedding", "TiedInt8Linear"]
