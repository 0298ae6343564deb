import torch

from modelyard.models import MODELS, create_model


def build(**fields):
    cfg = MODELS.get("text-transformer").config.model_validate({"name": "text-transformer", "d_model": 16,
                                                                 "n_heads": 2, "dropout": 0.0, **fields})
    return create_model(cfg, input_shape=(32,), num_classes=3, kind="text", vocab_size=50, pad_id=0)


def test_forward_backward_shape_and_finite():
    torch.manual_seed(0)
    model = build()
    ids = torch.randint(3, 50, (4, 32))
    ids[:, 20:] = 0  # padding
    out = model(ids)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_padding_changes_nothing():
    torch.manual_seed(0)
    for pooling in ("mean", "cls"):
        model = build(pooling=pooling).eval()
        ids = torch.randint(3, 50, (2, 32))
        short = ids.clone()
        short[:, 10:] = 0
        a = model(short)
        # the same ten tokens with a different amount of padding after them: same answer
        b = model(torch.cat([short[:, :10], torch.zeros(2, 22, dtype=torch.long)], dim=1))
        assert torch.allclose(a, b, atol=1e-6)
        # a different token where there was padding: changes the answer (the mask is not a no-op)
        changed = short.clone()
        changed[:, 12] = 7
        assert not torch.allclose(model(changed), a)


def test_text_models_refuse_images_and_image_models_refuse_text():
    import pytest

    from modelyard.errors import ModelError

    cfg = MODELS.get("lenet5").config.model_validate({"name": "lenet5"})
    with pytest.raises(ModelError, match="cannot read text data; models that can: hf, text-transformer, tfidf-linear"):
        create_model(cfg, input_shape=(32,), num_classes=3, kind="text", vocab_size=50, pad_id=0)
