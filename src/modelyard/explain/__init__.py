"""Explanations: which pixels, tokens or columns moved a model's prediction, on Captum (gradient methods) and
SHAP (model-agnostic), each method with its own quality figure, and deletion curves that check them.

Example:
    >>> from modelyard.explain import explain
    >>> e = explain("runs/digits-lenet-...", "my_digits/", method="integrated-gradients")
    >>> e.save("explanations/")

One file per family of methods, each registering its methods and its kind's view: image.py (images and
sequences: Integrated Gradients, saliency, Grad-CAM, occlusion), text.py (layer Integrated Gradients at the
token embeddings, exact linear attribution for TF-IDF), table.py (KernelSHAP, permutation SHAP, exact linear,
permutation importance). faithfulness.py scores any of them by deletion curves.
"""

from modelyard.explain import image, table, text  # noqa: F401  (each registers its methods and view)
from modelyard.explain.base import (DEFAULTS, EXPLAINERS, VIEWS, Attributions, Batch, Explanation, Item,
                                    MethodParams, Subject, explain, methods_for, register_explainer, register_view)

__all__ = ["explain", "Explanation", "Item", "Attributions", "Batch", "Subject", "MethodParams", "EXPLAINERS",
           "VIEWS", "DEFAULTS", "register_explainer", "register_view", "methods_for"]
