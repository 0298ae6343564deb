"""text-transformer: a Transformer encoder trained from scratch for text classification.

Token and learned position embeddings, N pre-norm blocks of multi-head self-attention (through
torch.nn.functional.scaled_dot_product_attention) and an MLP, then mean or <cls> pooling and a linear head.
Padding (id `pad_id`) is masked out of attention and of mean pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelyard.errors import ModelError
from modelyard.models.configs import TextTransformerConfig, TransformerSizes


def feed_forward(cfg: TransformerSizes) -> nn.Sequential:
    """The block's MLP: d_model -> ff_mult * d_model -> d_model."""
    return nn.Sequential(nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model), nn.GELU(),
                         nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))


def split_heads(qkv: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fused (B, T, 3C) query/key/value projection -> q, k, v, each (B, H, T, C / H)."""
    B, T, C3 = qkv.shape
    return tuple(t.view(B, T, n_heads, C3 // 3 // n_heads).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2))


class SelfAttention(nn.Module):
    def __init__(self, cfg: TextTransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = split_heads(self.qkv(x), self.n_heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],  # (B, 1, 1, T): keys to use
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: TextTransformerConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.mlp = feed_forward(cfg)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), keep)
        return x + self.mlp(self.ln2(x))


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextTransformerConfig, *, max_length: int, vocab_size: int, pad_id: int,
                 num_classes: int) -> None:
        super().__init__()
        self.pad_id, self.pooling = pad_id, cfg.pooling
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(max_length, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        keep = ids != self.pad_id  # (B, T)
        keep[:, 0] = True  # a text that is all padding still attends to its first position, not to nothing
        x = self.drop(self.tok(ids) + self.pos(torch.arange(T, device=ids.device)))  # (B, T, C)
        for block in self.blocks:
            x = block(x, keep)
        x = self.ln(x)
        if self.pooling == "cls":
            pooled = x[:, 0]  # the tokeniser puts <cls> first
        else:
            w = keep.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            pooled = (x * w).sum(dim=1) / w.sum(dim=1)  # (B, C)
        return self.head(pooled)


def text_transformer(cfg: TextTransformerConfig, *, input_shape: tuple[int, ...], num_classes: int,
                     vocab_size: int, pad_id: int) -> nn.Module:
    if len(input_shape) != 1:
        raise ModelError(f"text-transformer reads token ids shaped (length,), got {input_shape}")
    return TextTransformer(cfg, max_length=input_shape[0], vocab_size=vocab_size, pad_id=pad_id,
                           num_classes=num_classes)
