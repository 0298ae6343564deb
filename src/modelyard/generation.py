"""Text generation for language models (`gpt` and causal `hf`), one token at a time with a key-value cache.

The prompt is encoded once (the "prefill"); each new token then runs the model on that one token only,
attending over the cached keys and values, so the cost per new token does not grow with the prompt.
When the context window is full, the newest half of it is re-encoded and generation goes on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch

from modelyard.errors import ConfigError


@torch.no_grad()
def sample_ids(model: torch.nn.Module, prompt_ids: list[int], *, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, seed: int | None = None, stop_id: int | None = None) -> Iterator[int]:
    """Yield up to `max_new_tokens` sampled token ids; temperature 0 is greedy. Stops early at `stop_id`."""
    if temperature < 0:
        raise ConfigError(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be 1 or more, got {top_k}")
    if not prompt_ids:
        raise ConfigError("the prompt encodes to no tokens; give some text")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else seed)
    window = model.context_length
    ids = list(prompt_ids)
    cache = model.init_cache(1, window)
    logits = model(torch.tensor([ids[-window:]], device=device), cache)[:, -1]  # prefill: (1, vocab)
    for _ in range(max_new_tokens):
        nxt = _pick(logits.float(), temperature, top_k, gen)
        yield nxt
        if nxt == stop_id:
            return
        ids.append(nxt)
        if cache.pos >= window:  # full: re-encode the newest half and go on
            cache = model.init_cache(1, window)
            logits = model(torch.tensor([ids[-(window // 2):]], device=device), cache)[:, -1]
        else:
            logits = model(torch.tensor([[nxt]], device=device), cache)[:, -1]


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax(dim=-1))
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(logits.softmax(dim=-1), 1, generator=gen))


class LanguageModel:
    """A saved language model. Create it with `modelyard.load(run)`.

    Example:
        >>> lm = modelyard.load("runs/gpt-small-20261122T100000Z")
        >>> for piece in lm.generate("a library for", max_new_tokens=40, seed=0):
        ...     print(piece, end="")
    """

    def __init__(self, model_dir: Path, model: torch.nn.Module, meta: dict, preprocessor) -> None:
        self.model_dir, self.model, self.meta, self.preprocessor = model_dir, model, meta, preprocessor

    @property
    def name(self) -> str:
        return self.meta["experiment"]

    def generate(self, prompt: str, *, max_new_tokens: int = 50, temperature: float = 0.8, top_k: int | None = 50,
                 seed: int | None = None, stop_at_eos: bool = True) -> Iterator[str]:
        """Yield the generated text piece by piece, as each token is sampled."""
        pre = self.preprocessor
        prompt_ids = pre.encode(prompt)
        new: list[int] = []
        shown, base = "", pre.decode(prompt_ids)
        for token in sample_ids(self.model, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, seed=seed, stop_id=pre.eos_id if stop_at_eos else None):
            if token == pre.eos_id:
                break
            new.append(token)
            # Decode everything so far: a byte-level token may complete a character begun by the one before.
            text = pre.decode(prompt_ids + new)[len(base):]
            if len(text) > len(shown) and not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text

    def complete(self, prompt: str, **kwargs) -> str:
        """The whole generated continuation as one string."""
        return "".join(self.generate(prompt, **kwargs))

    def perplexity(self, texts: list[str]) -> float:
        """Perplexity of the model on `texts`, cut into blocks as in training."""
        from modelyard.data.base import RawData
        from modelyard.inference import lm_eval

        raw = RawData(x=list(texts), y=None, kind="corpus")
        device = next(self.model.parameters()).device
        loss, _, _ = lm_eval(self.model, self.preprocessor.dataset(raw, None, train=False), device=device)
        return math.exp(loss)
