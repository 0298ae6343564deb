"""gpt: a decoder-only causal language model, nanoGPT-style.

Token and learned position embeddings, N pre-norm blocks of causal self-attention (through
torch.nn.functional.scaled_dot_product_attention) and an MLP, a final LayerNorm, and an output layer
tied to the token embedding. `forward(ids)` gives next-token logits (B, T, vocab); with a `KVCache`
it attends over the cached keys and values, so generating one token costs the same whatever came before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelyard.errors import ModelError
from modelyard.models.configs import GPTConfig
from modelyard.models.transformer import feed_forward, split_heads


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated to `length` positions."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, length: int, head_dim: int, *, device, dtype) -> None:
        shape = (batch, n_heads, length, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length, self.pos = length, 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = split_heads(self.qkv(x), self.n_heads)  # each (B, H, T, D)
        mask, causal = None, True
        if cache is not None:
            start = cache.pos
            cache.k[layer][:, :, start:start + T] = k
            cache.v[layer][:, :, start:start + T] = v
            k, v = cache.k[layer][:, :, :start + T], cache.v[layer][:, :, :start + T]  # (B, H, start+T, D)
            if start > 0:  # query i sits at position start+i and may see keys 0..start+i
                causal = False
                if T > 1:
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = feed_forward(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, *, context_length: int, vocab_size: int) -> None:
        super().__init__()
        self.cfg, self.context_length = cfg, context_length
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(context_length, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied input/output embeddings
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def init_cache(self, batch: int = 1, length: int | None = None) -> KVCache:
        p = self.tok.weight
        return KVCache(len(self.blocks), batch, self.cfg.n_heads, length or self.context_length,
                       self.cfg.d_model // self.cfg.n_heads, device=p.device, dtype=p.dtype)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T = ids.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.context_length:
            raise ValueError(f"{start + T} positions asked of a model with context_length {self.context_length}")
        x = self.drop(self.tok(ids) + self.pos(torch.arange(start, start + T, device=ids.device)))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        return self.head(self.ln(x))  # (B, T, vocab)


def gpt(cfg: GPTConfig, *, input_shape: tuple[int, ...], num_classes: int, vocab_size: int,
        task: str = "lm") -> nn.Module:
    if len(input_shape) != 1:
        raise ModelError(f"gpt reads blocks of token ids shaped (block_size,), got {input_shape}")
    context = cfg.context_length or input_shape[0]
    if context < input_shape[0]:
        raise ModelError(f"model.context_length {context} is shorter than data.block_size {input_shape[0]}; "
                         "raise model.context_length or lower data.block_size")
    return GPT(cfg, context_length=context, vocab_size=vocab_size)
