import pytest
import torch

from modelyard.errors import ModelError
from modelyard.generation import sample_ids
from modelyard.models import MODELS, create_model


def tiny_gpt(context=16, vocab=50, **fields):
    torch.manual_seed(0)
    cfg = MODELS.get("gpt").config.model_validate({"name": "gpt", "d_model": 16, "n_layers": 2, "n_heads": 2,
                                                   "dropout": 0.0, **fields})
    return create_model(cfg, input_shape=(context,), num_classes=0, kind="corpus", vocab_size=vocab, task="lm").eval()


def test_changing_a_later_token_never_changes_an_earlier_logit():
    model = tiny_gpt()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_cached_steps_give_the_same_logits_as_one_full_pass():
    model = tiny_gpt()
    ids = torch.randint(0, 50, (1, 12))
    full = model(ids)
    cache = model.init_cache(1)
    pieces = [model(ids[:, :5], cache), model(ids[:, 5:8], cache)]  # a prefill, then a 3-token chunk
    pieces += [model(ids[:, t:t + 1], cache) for t in range(8, 12)]  # then one token at a time
    assert cache.pos == 12
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_output_layer_is_tied_to_the_token_embedding():
    model = tiny_gpt()
    assert model.head.weight is model.tok.weight


def test_saved_and_reloaded_weights_keep_the_tie(tmp_path):
    from safetensors.torch import load_model, save_model

    model = tiny_gpt()
    save_model(model, str(tmp_path / "m.safetensors"))
    other = tiny_gpt()
    torch.nn.init.zeros_(other.tok.weight)
    load_model(other, str(tmp_path / "m.safetensors"))
    ids = torch.randint(0, 50, (1, 8))
    assert torch.equal(model(ids), other(ids)) and other.head.weight is other.tok.weight


def test_sampling_is_reproducible_with_a_seed_and_greedy_is_argmax():
    model = tiny_gpt()
    run = lambda seed: list(sample_ids(model, [1, 2, 3], max_new_tokens=8, temperature=1.0, top_k=5, seed=seed))  # noqa: E731
    assert run(3) == run(3)
    greedy = list(sample_ids(model, [1, 2, 3], max_new_tokens=1, temperature=0))
    assert greedy == [int(model(torch.tensor([[1, 2, 3]]))[0, -1].argmax())]


def test_generation_goes_past_the_context_window():
    model = tiny_gpt(context=8)
    out = list(sample_ids(model, [1, 2, 3, 4, 5, 6], max_new_tokens=20, seed=0))
    assert len(out) == 20 and all(0 <= t < 50 for t in out)


def test_top_k_one_is_greedy():
    model = tiny_gpt()
    a = list(sample_ids(model, [4, 5], max_new_tokens=6, temperature=1.5, top_k=1, seed=1))
    b = list(sample_ids(model, [4, 5], max_new_tokens=6, temperature=0))
    assert a == b


def test_context_shorter_than_the_block_is_refused():
    with pytest.raises(ModelError, match="context_length 8 is shorter than data.block_size 16"):
        tiny_gpt(context=16, context_length=8)
