"""Text generation for language models (`gpt` and causal `hf`), one token at a time with a key-value cache.

The prompt is encoded once (the "prefill"); each new token then runs the model on that one token only,
attending over the cached keys and values, so the cost per new token does not grow with the prompt.
When the context window is full, the newest half of it is re-encoded and generation goes on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from modelyard.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Below this temperature the next token is the most likely one (as at 0): dividing the logits by 1e-30 overflows
# float32 to inf and softmax to NaN, and at 1e-5 a logit gap of 1e-4 is already a ratio of e**-10.
GREEDY_BELOW = 1e-5
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit number


def check_sampling(*, max_new_tokens: int, temperature: float, top_k: int | None, seed: int | None) -> None:
    """Raise ConfigError, naming the argument and its CLI option, for a value generation cannot use."""
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens (--max-new-tokens) must be 0 or more, got {max_new_tokens}; "
                          "0 gives the prompt back with nothing added")
    if not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"temperature (--temperature) must be a finite number, 0 or more, got {temperature}; "
                          "use 0 for the most likely token every time, around 0.7-1.0 for varied text")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"top_k (--top-k) must be 0 or more, got {top_k}; use 0 (or None) to sample from every "
                          "token, k to sample from the k most likely")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        shown = seed if len(str(seed)) <= 40 else f"a {len(str(abs(seed)))}-digit number"
        raise ConfigError(f"seed (--seed) must be from 0 to 2**64-1 ({MAX_SEED}), got {shown}; pick a seed in that "
                          "range (each gives its own reproducible text)")


def check_prompt(prompt: str) -> None:
    """Raise ConfigError if `prompt` is not text that UTF-8 can hold (e.g. a latin-1 byte from the shell)."""
    if not isinstance(prompt, str):
        raise ConfigError(f"the prompt must be a str, got {type(prompt).__name__}; decode bytes first, "
                          "e.g. data.decode('utf-8')")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(prompt[exc.start])
        # Python turns each byte of a command-line argument that is not UTF-8 into U+DC80..U+DCFF.
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"the lone surrogate U+{code:04X}"
        raise ConfigError(f"the prompt (--prompt) is not valid UTF-8: {what} at character {exc.start + 1}; pass UTF-8 "
                          "text (a latin-1 prompt converts with `iconv -f latin1 -t utf-8`)") from None


def sample_ids(model: torch.nn.Module, prompt_ids: list[int], *, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, seed: int | None = None, stop_id: int | None = None) -> Iterator[int]:
    """Up to `max_new_tokens` sampled token ids, yielded as each is sampled; stops after yielding `stop_id`.

    Temperature 0 (or below GREEDY_BELOW) is greedy; `top_k` None or 0 samples from every token.

    Raises:
        ConfigError: a bad argument or an empty `prompt_ids`, when called (before any token is sampled).
    """
    check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    if not prompt_ids:
        raise ConfigError("sample_ids needs at least one prompt token; start from the end-of-text token to begin "
                          "a new document (LanguageModel.generate does this for an empty prompt)")
    import torch

    # no_grad around each step, not a `with` across the yields: between tokens the caller's grad mode is its own.
    return torch.no_grad()(_sample)(model, list(prompt_ids), max_new_tokens, temperature, top_k or None, seed,
                                    stop_id)


def _sample(model, ids: list[int], max_new_tokens: int, temperature: float, top_k: int | None, seed: int | None,
            stop_id: int | None) -> Iterator[int]:
    import torch

    if max_new_tokens == 0:
        return
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else seed)
    window = model.context_length
    cache = model.init_cache(1, window)
    logits = model(torch.tensor([ids[-window:]], device=device), cache)[:, -1]  # prefill: (1, vocab)
    for step in range(max_new_tokens):
        nxt = _pick(logits.float(), temperature, top_k, gen)
        yield nxt
        if nxt == stop_id or step == max_new_tokens - 1:
            return
        ids.append(nxt)
        if cache.pos >= window:  # full: re-encode the newest half and go on
            cache = model.init_cache(1, window)
            logits = model(torch.tensor([ids[-(window // 2):]], device=device), cache)[:, -1]
        else:
            logits = model(torch.tensor([[nxt]], device=device), cache)[:, -1]


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    import torch

    if temperature < GREEDY_BELOW:
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

    task = "lm"

    def __init__(self, model_dir: Path, model: torch.nn.Module, meta: dict, preprocessor) -> None:
        self.model_dir, self.model, self.meta, self.preprocessor = model_dir, model, meta, preprocessor

    @property
    def name(self) -> str:
        return self.meta["experiment"]

    def generate(self, prompt: str, *, max_new_tokens: int = 50, temperature: float = 0.8, top_k: int | None = 50,
                 seed: int | None = None, stop_at_eos: bool = True) -> Iterator[str]:
        """Yield the generated text piece by piece, as each token is sampled.

        An empty prompt (or one that encodes to no tokens) starts a new document: the model continues from the
        end-of-text token that ends each document in training. `max_new_tokens=0` yields nothing. With
        `stop_at_eos`, generation ends where the model ends the document; without, the token shows in the text.

        Raises:
            ConfigError: a prompt that is not UTF-8 text or a bad sampling argument, when called.
        """
        check_prompt(prompt)
        check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
        pre = self.preprocessor
        prompt_ids = pre.encode(prompt)
        stop = pre.eos_id if stop_at_eos else None
        tokens = sample_ids(self.model, prompt_ids or [pre.eos_id], max_new_tokens=max_new_tokens,
                            temperature=temperature, top_k=top_k, seed=seed, stop_id=stop)
        return self._text_pieces(prompt_ids, tokens, stop)

    def _text_pieces(self, prompt_ids: list[int], tokens: Iterator[int], stop: int | None) -> Iterator[str]:
        pre = self.preprocessor
        new: list[int] = []
        shown, base, text = "", pre.decode(prompt_ids), ""
        for token in tokens:
            if token == stop:
                break
            new.append(token)
            # Decode everything so far: a byte-level token may complete a character begun by the one before.
            text = pre.decode(prompt_ids + new)[len(base):]
            if len(text) > len(shown) and not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text
        if len(text) > len(shown):  # the last token left a character unfinished: show what there is
            yield text[len(shown):]

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
