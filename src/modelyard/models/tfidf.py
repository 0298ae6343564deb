"""tfidf-linear: the cheap text baseline. scikit-learn TF-IDF over word 1-2 grams and a linear SVM or
logistic regression, with probabilities calibrated by a temperature fitted on the validation split.

It is an estimator, not a torch module: `modelyard train` fits it in one call (no epochs, no checkpoints)
and writes the same run directory as every other model. It is saved without pickle: the vocabulary as
JSON, the idf weights, coefficients, intercepts and temperature as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np

from modelyard.models.configs import TfidfLinearConfig


class TfidfLinear:
    """Texts -> TF-IDF -> linear scores (N, C) -> softmax(scores / temperature)."""

    estimator = True  # fitted in one call by the pipeline, not by the training loop

    def __init__(self, cfg: TfidfLinearConfig, num_classes: int) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        self.vectorizer = None
        self.coef = self.intercept = None
        self.temperature = 1.0

    def _vectorizer(self, vocabulary=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.cfg
        return TfidfVectorizer(ngram_range=(1, c.ngram_max), min_df=1 if vocabulary else c.min_df,
                               max_features=None if vocabulary else c.max_features, sublinear_tf=c.sublinear_tf,
                               lowercase=c.lowercase, vocabulary=vocabulary, dtype=np.float32)

    def fit(self, texts: list[str], y: np.ndarray, val_texts: list[str], val_y: np.ndarray) -> "TfidfLinear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        self.vectorizer = self._vectorizer()
        x = self.vectorizer.fit_transform(texts)
        clf = (LinearSVC(C=self.cfg.C) if self.cfg.classifier == "svm"
               else LogisticRegression(C=self.cfg.C, max_iter=2000))
        clf.fit(x, y)
        # C order: liblinear hands back Fortran-ordered arrays, and safetensors writes the raw buffer.
        coef = np.ascontiguousarray(clf.coef_, dtype=np.float32)
        intercept = np.ascontiguousarray(clf.intercept_, dtype=np.float32)
        if coef.shape[0] == 1:  # two classes: sklearn keeps one score s; as logits that is (0, s)
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        self.coef, self.intercept = np.ascontiguousarray(coef), intercept.astype(np.float32)
        self.temperature = fit_temperature(self.scores(val_texts), val_y)
        return self

    def scores(self, texts: list[str]) -> np.ndarray:
        x = self.vectorizer.transform(list(texts))
        return np.asarray(x @ self.coef.T, dtype=np.float64) + self.intercept

    def predict_proba(self, texts) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        return softmax(self.scores(texts) / self.temperature)

    def count_parameters(self) -> dict:
        n = int(self.coef.size + self.intercept.size)
        return {"parameters": n, "trainable_parameters": n, "trainable_fraction": 1.0}

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        vocab = self.vectorizer.vocabulary_
        terms = sorted(vocab, key=vocab.get)
        (folder / "tfidf_vocabulary.json").write_text(json.dumps(terms, ensure_ascii=False))
        save_file({"idf": self.vectorizer.idf_.astype(np.float32), "coef": self.coef, "intercept": self.intercept,
                   "temperature": np.array([self.temperature], dtype=np.float64)}, str(folder / "model.safetensors"))

    def load_weights(self, folder: Path) -> "TfidfLinear":
        from safetensors.numpy import load_file

        model = self
        arrays = load_file(str(folder / "model.safetensors"))
        terms = json.loads((folder / "tfidf_vocabulary.json").read_text())
        model.vectorizer = model._vectorizer(vocabulary=terms)
        model.vectorizer.idf_ = arrays["idf"]
        model.coef, model.intercept = arrays["coef"], arrays["intercept"]
        model.temperature = float(arrays["temperature"][0])
        return self


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the validation log-loss of softmax(scores / T): multiclass temperature scaling."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = softmax(scores / np.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded").x))


def tfidf_linear(cfg: TfidfLinearConfig, *, input_shape: tuple[int, ...] = (), num_classes: int,
                 **_unused) -> TfidfLinear:
    return TfidfLinear(cfg, num_classes)
