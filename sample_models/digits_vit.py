"""Tiny Vision Transformer (Dosovitskiy et al. 2021) for 8x8 digits, with hand-written multi-head attention.

Written so structure can be removed later: each ``Attention`` reads its head count from ``n_heads`` and its
head width from ``head_dim`` (so dropping heads means slicing ``qkv`` rows and ``proj`` columns and lowering
``n_heads``), each ``MLP`` reads its hidden size from its Linear layers, and ``blocks`` is a ModuleList whose
entries can be deleted (layer pruning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(dim, 3 * n_heads * head_dim)  # rows: [q heads | k heads | v heads]
        self.proj = nn.Linear(n_heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, dim)
        qkv = self.qkv(x).reshape(b, t, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, d)
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H*d)
        return self.proj(y)  # (B, T, dim)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, n_heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, head_dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class DigitsViT(nn.Module):
    def __init__(
        self,
        image: int = 8,
        patch: int = 2,
        dim: int = 32,
        depth: int = 2,
        n_heads: int = 4,
        hidden: int = 64,
        classes: int = 10,
    ) -> None:
        super().__init__()
        self.patch = patch
        n_patches = (image // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, n_patches, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dim // n_heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape  # (B, 1, 8, 8)
        p = self.patch
        x = x.reshape(b, h // p, p, w // p, p).permute(0, 1, 3, 2, 4).reshape(b, -1, p * p)  # (B, T, p*p)
        x = self.embed(x) + self.pos  # (B, T, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))  # (B, classes)
