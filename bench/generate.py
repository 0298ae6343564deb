"""Generation speed with the key-value cache: tokens per second after a 32-token and a 512-token prompt.

Target: with the cache, the time per new token after a 512-token prompt is less than 2x the time after a
32-token prompt. Without the cache (the whole text re-run for every token) is measured beside it.
Usage: python bench/generate.py [RUN]   (default: a randomly initialised gpt of gpt-small's shape with
640 positions; weights do not change the speed)
"""

import sys
import time

import torch

from _common import machine, median, spread

from modelyard.generation import sample_ids

NEW, REPEATS = 64, 5


def gpt_small(context=640, vocab=4096):
    from modelyard.models import MODELS, create_model

    cfg = MODELS.get("gpt").config.model_validate(
        {"name": "gpt", "d_model": 128, "n_layers": 4, "n_heads": 4, "dropout": 0.1, "context_length": context})
    return create_model(cfg, input_shape=(128,), num_classes=0, kind="corpus", vocab_size=vocab, task="lm").eval()


@torch.no_grad()
def uncached(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids[-model.context_length:]]))[0, -1].argmax()))


def per_token_ms(fn) -> list[float]:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000 / NEW)
    return times


if len(sys.argv) > 1:
    import modelyard

    model = modelyard.load(sys.argv[1]).model
else:
    model = gpt_small()
vocab = model.get_input_embeddings().num_embeddings if hasattr(model, "get_input_embeddings") else model.tok.num_embeddings
print(f"machine: {machine()}")
print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, {model.context_length} positions; "
      f"{NEW} new tokens per run, greedy, median of {REPEATS} runs")
results = {}
for length in (32, 512):
    prompt = torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    list(sample_ids(model, prompt, max_new_tokens=4, temperature=0))  # warm-up
    cached = per_token_ms(lambda: list(sample_ids(model, prompt, max_new_tokens=NEW, temperature=0)))
    plain = per_token_ms(lambda: uncached(model, prompt, NEW))
    results[length] = median(cached)
    # The cached figure includes the one prefill of the prompt, spread over the new tokens.
    print(f"prompt {length:4d}: with cache {median(cached):6.2f} ms/token ({1000 / median(cached):7.1f} tokens/s; "
          f"{spread(cached)}), without cache {median(plain):6.2f} ms/token ({1000 / median(plain):7.1f} tokens/s)")
ratio = results[512] / results[32]
print(f"per-token time, 512-token vs 32-token prompt, with cache: {ratio:.2f}x (target < 2x: "
      f"{'met' if ratio < 2 else 'NOT met'})")
