"""Explanations of image and sequence models, on Captum: Integrated Gradients, saliency, Grad-CAM and occlusion,
and how they are drawn (a PNG per input: the input, its heat map, and the two overlaid).

Every method attributes one number per pixel (H, W) or per position (L,), summed or reduced over channels, for
the target class. Integrated Gradients and occlusion replace the input by `subject.reference` (the training
split's mean input), the same value the deletion curves fill with: a zero baseline would flatter them.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from pydantic import Field

from modelyard.errors import ConfigError
from modelyard.explain.base import (Attributions, MethodParams, View, convergence, register_explainer,
                                    register_view)

KINDS = ("image", "sequence")
NON_NEGATIVE = ("saliency", "grad-cam")  # drawn on a sequential colour map from 0, the rest on a diverging one
GRADIENT_CHUNK = 256  # inputs per backward pass for saliency and Grad-CAM: a folder of images is not one batch


def _chunks(subject, batch, size: int):
    """The batch's inputs (N, C, H, W) or (N, 1, L) and their target class indices, on the model's device, `size`
    inputs at a time."""
    import torch

    device = subject.predictor.device
    for start in range(0, len(batch), size):
        x = batch.x[start:start + size].to(device).float()
        yield x, torch.as_tensor(np.asarray(batch.target[start:start + size]), dtype=torch.long, device=device)


def _per_input(parts) -> list[np.ndarray]:
    """Chunks of (n, H, W) or (n, L) -> one float array per input."""
    return [a for part in parts for a in part.detach().cpu().double().numpy()]


# ---------------------------------------------------------------- Integrated Gradients


class IntegratedGradientsParams(MethodParams):
    n_steps: int = Field(50, ge=1, le=10_000, description="points on the path from the baseline to the input")
    internal_batch_size: int = Field(64, ge=1, description="inputs x steps evaluated per forward pass; IG multiplies "
                                                          "the batch by n_steps and runs out of memory without it")


@register_explainer("integrated-gradients", kinds=KINDS, needs="gradients", params=IntegratedGradientsParams,
                    summary="Integrated Gradients from the training split's mean input (Captum), with its "
                            "completeness gap")
def integrated_gradients(subject, batch, params: IntegratedGradientsParams) -> Attributions:
    import torch
    from captum.attr import IntegratedGradients

    probabilities = subject.probabilities  # a bf16 copy gets its inputs cast inside Subject.logits
    ig = IntegratedGradients(probabilities)
    reference = subject.reference.value.to(subject.predictor.device).float().unsqueeze(0)  # (1, C, H, W)
    values, quality = [], []
    # Captum takes internal_batch_size as a number of (input, step) pairs but never fewer than the inputs it is
    # given, so no more inputs than that go in at once.
    for x, target in _chunks(subject, batch, params.internal_batch_size):
        baseline = reference.expand_as(x).contiguous()
        attr, delta = ig.attribute(x, baselines=baseline, target=target, n_steps=params.n_steps,
                                   internal_batch_size=params.internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            rows = torch.arange(len(x), device=x.device)
            gap = probabilities(x)[rows, target] - probabilities(reference)[0, target]  # (n,)
        for d, g in zip(delta.detach().double().cpu().abs().tolist(), gap.double().cpu().abs().tolist()):
            quality.append(convergence(d, g))
        values.append(attr.sum(dim=1))  # (n, C, H, W) -> (n, H, W); (n, 1, L) -> (n, L)
    return Attributions(
        values=_per_input(values), quality=quality,
        settings={"n_steps": params.n_steps, "internal_batch_size": params.internal_batch_size,
                  "baseline": subject.reference.source, "attributes": "the target class's probability",
                  "channels": "summed"})


# ---------------------------------------------------------------- saliency and Grad-CAM


@register_explainer("saliency", kinds=KINDS, needs="gradients",
                    summary="absolute gradient of the target class's score per pixel (Captum Saliency)")
def saliency(subject, batch, params: MethodParams) -> Attributions:
    from captum.attr import Saliency

    # The class score, not its probability: a confident prediction's probability saturates at 1.0 in float32 and
    # its gradient underflows to an all-zero map.
    gradient = Saliency(subject.logits)
    # Channels reduce to the strongest one per pixel (Simonyan et al., 2014).
    maps = [gradient.attribute(x.requires_grad_(), target=target, abs=True).amax(dim=1)
            for x, target in _chunks(subject, batch, GRADIENT_CHUNK)]
    return Attributions(
        values=_per_input(maps),
        settings={"attributes": "the target class's score (logit)", "gradient": "absolute value",
                  "channels": "maximum over channels"})


@register_explainer("grad-cam", kinds=KINDS, needs="conv",
                    summary="Grad-CAM on the last convolution layer, upsampled to the input (Captum LayerGradCam)")
def grad_cam(subject, batch, params: MethodParams) -> Attributions:
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    name, layer = last_convolution(subject)
    cams = LayerGradCam(subject.logits, layer)
    mode = "bilinear" if subject.kind == "image" else "linear"
    maps, cam_shape = [], None
    for x, target in _chunks(subject, batch, GRADIENT_CHUNK):
        cam = cams.attribute(x, target=target, relu_attributions=True)  # (n, 1, h, w) at the layer's size
        cam_shape = tuple(cam.shape[2:])
        with torch.no_grad():
            maps.append(LayerAttribution.interpolate(cam.float(), tuple(x.shape[2:]), interpolate_mode=mode)[:, 0])
    return Attributions(
        values=_per_input(maps),
        settings={"layer": name, "attributes": "the target class's score (logit)",
                  "upsampling": f"{mode} from {'x'.join(map(str, cam_shape))} to the input",
                  "negative evidence": "dropped (ReLU)"})


def last_convolution(subject):
    """The name and module of the model's last 2-D (images) or 1-D (sequences) convolution's feature maps: the
    activation that follows it in the same block (past a normalisation layer), else the convolution itself.

    Grad-CAM weighs rectified feature maps (Selvaraju et al.). Taken before the ReLU, 97% of the digits LeNet's
    map values were negative and 163 of 200 maps came out all zero (deletion ratio 0.94, barely better than
    random); after it, none was flat and the ratio was 0.73.
    """
    import torch

    kind = torch.nn.Conv2d if subject.kind == "image" else torch.nn.Conv1d
    modules = list(subject.module.named_modules())
    convs = [i for i, (_, m) in enumerate(modules) if isinstance(m, kind)]
    if not convs:
        raise ConfigError(f"--method grad-cam needs a {kind.__name__} layer for {subject.kind} inputs, and "
                          f"{subject.model_name} has none; use integrated-gradients or occlusion")
    name, conv = modules[convs[-1]]
    parent = name.rpartition(".")[0]
    nn = torch.nn
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    activations = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Mish)
    for after, m in modules[convs[-1] + 1:]:
        if after.rpartition(".")[0] != parent:
            break
        if isinstance(m, norms):
            continue
        if isinstance(m, activations):
            return after, m
        break
    return name, conv


# ---------------------------------------------------------------- occlusion


class OcclusionParams(MethodParams):
    window: int | None = Field(None, ge=1, description="side of the square patch (pixels) or length of the window "
                                                       "(positions); default about 1/7 of the input's side")
    stride: int | None = Field(None, ge=1, description="step between patches; default half the window, so each "
                                                       "pixel is averaged over overlapping patches")


@register_explainer("occlusion", kinds=KINDS, needs="forward", params=OcclusionParams,
                    summary="drop in the target class's probability when a patch is replaced by the training "
                            "split's mean (Captum Occlusion); any model family")
def occlusion(subject, batch, params: OcclusionParams) -> Attributions:
    import torch
    from captum.attr import Occlusion

    x = batch.x.float()
    side = tuple(x.shape[2:])  # (H, W) or (L,)
    window = params.window or max(1, round(min(side) / 7))
    stride = params.stride or max(1, window // 2)
    if window > min(side):
        raise ConfigError(f"occlusion window {window} is larger than the input ({'x'.join(map(str, side))}); pass "
                          f"a window of at most {min(side)}")
    if stride > window:  # patches with gaps between them would leave pixels never occluded
        raise ConfigError(f"occlusion stride {stride} is larger than the window {window}; pass a stride of at most "
                          f"{window}")
    baseline = subject.reference.value.float().unsqueeze(0).expand_as(x).contiguous()
    channels = x.shape[1]

    def forward(inputs):  # any family: probabilities without gradients, as numpy from the adapter
        return torch.from_numpy(subject.proba(inputs)).float()

    shifts = int(np.prod([(s - window) // stride + 1 for s in side]))
    attr = Occlusion(forward).attribute(
        x, sliding_window_shapes=(channels,) + (window,) * len(side), strides=(channels,) + (stride,) * len(side),
        baselines=baseline, target=torch.as_tensor(np.asarray(batch.target), dtype=torch.long),
        perturbations_per_eval=max(1, min(shifts, 512 // len(x))))
    return Attributions(
        values=_per_input([attr.mean(dim=1)]),  # a patch spans every channel, so each holds the same value
        settings={"window": window, "stride": stride, "baseline": subject.reference.source,
                  "attributes": "drop in the target class's probability when the patch is replaced, averaged over "
                                "the patches covering each pixel"})


# ---------------------------------------------------------------- the views


def _label(text: str, limit: int = 24) -> str:
    """A label as a figure title shows it: shortened, and its dollar signs literal (matplotlib reads $...$ as
    mathematics, and fails on some)."""
    text = str(text)
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def title(item, method: str) -> str:
    """"predicted 7 (p=0.97) · target 7 (p=0.97) · method": a predicted label's probability is known only when it
    is the target's."""
    predicted = f"predicted {_label(item.predicted)}"
    if item.predicted == item.target:
        predicted += f" (p={item.probability:.2f})"
    return f"{predicted} · target {_label(item.target)} (p={item.probability:.2f}) · {method}"


def safe_names(ids: list[str], suffix: str = ".png") -> list[str]:
    """A file name per id, unique and inside the folder: only [A-Za-z0-9._-], no leading dot, an image
    extension dropped ("sub/dir/x.png" -> "sub_dir_x.png")."""
    names, taken = [], set()
    for id_ in ids:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(id_))
        stem = re.sub(r"\.(png|jpe?g|bmp|gif|tiff?|webp)$", "", stem, flags=re.IGNORECASE)
        stem = stem.lstrip("._-")[:100] or "input"
        name, n = stem + suffix, 1
        while name.lower() in taken:  # case-insensitive: two ids may differ only in case on macOS or Windows
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def _heat_style(method: str, values: np.ndarray) -> dict:
    if method in NON_NEGATIVE:
        return {"cmap": "magma", "vmin": 0.0, "vmax": float(values.max()) or 1.0}
    limit = float(np.abs(values).max()) or 1.0
    return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}


def caption(item) -> str:
    """HTML caption: the input's id, prediction, target and quality figure, escaped."""
    text = f"{item.id}: predicted {item.predicted}, target {item.target} (p={item.probability:.3f})"
    gap = item.quality.get("relative_delta")
    if gap is not None:
        text += f"; attributions sum to f(x) - f(baseline) within {gap:.1%}"
    return html.escape(text)


def _pngs(explanation) -> list[bytes]:
    """One PNG per input, drawn once: `save` asks for the files and then for the page that inlines them."""
    cache = explanation.__dict__.setdefault("_pngs", {})
    key = (explanation.method, len(explanation))
    if key not in cache:
        draw = draw_image if explanation.kind == "image" else draw_sequence
        cache[key] = [draw(item, explanation.method) for item in explanation]
    return cache[key]


class _PictureView(View):
    """What images and sequences share: a PNG per input, written beside the page and inlined in it."""

    @staticmethod
    def fragment(explanation) -> str:
        from modelyard.report.page import figures_row

        return figures_row(*[(png, f"{explanation.method} attributions of {item.id}", caption(item))
                             for png, item in zip(_pngs(explanation), explanation)])

    @staticmethod
    def files(explanation, folder: Path) -> list[Path]:
        paths = []
        for png, name in zip(_pngs(explanation), safe_names([item.id for item in explanation])):
            path = folder / name
            path.write_bytes(png)
            paths.append(path)
        return paths


@register_view("image")
class ImageView(_PictureView):
    @staticmethod
    def shown(subject, batch) -> list[np.ndarray]:
        """Each input as it looks: (H, W, C) floats in [0, 1], the preprocessor's standardisation undone."""
        import torch

        pre = subject.predictor.preprocessor
        mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
        std = torch.tensor(pre.std).view(1, -1, 1, 1)
        pixels = (batch.x.detach().cpu().float() * std + mean).clamp(0.0, 1.0)
        return [p for p in pixels.permute(0, 2, 3, 1).double().numpy()]  # (N, C, H, W) -> (N, H, W, C)


@register_view("sequence")
class SequenceView(_PictureView):
    @staticmethod
    def shown(subject, batch) -> list[np.ndarray]:
        """Each sequence (L,) in its original units."""
        pre = subject.predictor.preprocessor
        return [s for s in batch.x.detach().cpu().double().numpy()[:, 0] * pre.std + pre.mean]


def draw_image(item, method: str) -> bytes:
    """Three panels: the input, the heat map, the heat map over the input."""
    import matplotlib.pyplot as plt

    from modelyard.report.page import png_bytes

    picture = np.asarray(item.shown)
    side = max(picture.shape[:2])
    width = 5.4 if side <= 64 else 10.0  # two small figures side by side on the page; a large image gets a row
    smooth = "nearest" if side <= 64 else "bilinear"  # an 8x8 digit's pixels stay visible
    gray = picture.shape[2] == 1
    shown = picture[..., 0] if gray else picture
    base = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if gray else {}
    style = _heat_style(method, item.values)
    fig, axes = plt.subplots(1, 3, figsize=(width, width / 3 + 0.5))
    axes[0].imshow(shown, interpolation=smooth, **base)
    axes[0].set_title("input", fontsize=8)
    heat = axes[1].imshow(item.values, interpolation=smooth, **style)
    axes[1].set_title("attribution", fontsize=8)
    cbar = fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.03)
    cbar.ax.tick_params(labelsize=6)
    axes[2].imshow(shown.mean(axis=-1) if not gray else shown, interpolation=smooth, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(item.values, interpolation=smooth, alpha=0.55, **style)
    axes[2].set_title("overlay", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title(item, method), fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.8, wspace=0.25)
    return png_bytes(fig)


def draw_sequence(item, method: str) -> bytes:
    """The signal with its attribution as a coloured band behind it, and the attribution per position below."""
    import matplotlib.pyplot as plt

    from modelyard.report.page import png_bytes

    signal, values = np.asarray(item.shown, dtype=float), item.values
    style = _heat_style(method, values)
    positions = np.arange(len(signal))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.4, 3.2), sharex=True, height_ratios=(2, 1))
    low, high = float(signal.min()), float(signal.max())
    pad = (high - low) * 0.05 or 1.0
    top.imshow(values[None, :], aspect="auto", extent=(-0.5, len(signal) - 0.5, low - pad, high + pad),
               interpolation="nearest", alpha=0.6, **style)
    top.plot(positions, signal, color="#222", linewidth=1.2)
    top.set_ylim(low - pad, high + pad)
    top.tick_params(labelsize=6)
    colours = plt.get_cmap(style["cmap"])((values - style["vmin"]) / ((style["vmax"] - style["vmin"]) or 1.0))
    bottom.bar(positions, values, color=colours, width=1.0)
    bottom.axhline(0, color="#888", linewidth=0.5)
    bottom.set_xlabel("position", fontsize=7)
    bottom.set_ylabel("attribution", fontsize=7)
    bottom.tick_params(labelsize=6)
    fig.suptitle(title(item, method), fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.88, hspace=0.08)
    return png_bytes(fig)
