"""One adapter per model family, registered by name; `artifact.load` picks one from modelyard.json's `family`.

Families: torch (a module from the model registry), hf (Hugging Face), estimator (scikit-learn based), onnx
(an ONNX Runtime session), torch-int8 (a dynamically quantised torch module).
"""

from modelyard.adapters import estimator, hf, onnx_runtime, quantized, torch_module  # noqa: F401  (registers the families)
from modelyard.adapters.base import ADAPTERS, Adapter, family_of_meta, family_of_model, register_adapter

__all__ = ["ADAPTERS", "Adapter", "family_of_meta", "family_of_model", "register_adapter"]
