"""One training loop for every model, on Accelerate: CPU, one GPU, or several processes (DDP).

It reads like a plain PyTorch loop. The loss of each process's shard is summed and divided by the
global batch size (times the world size, which DDP's gradient averaging divides back out), so W
processes take exactly the optimiser steps one process takes on the same global batches.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from modelyard.errors import ConfigError
from modelyard.inference import lm_eval, predict_dataset
from modelyard.metrics.classification import f1_macro
from modelyard.training.callbacks import Callback, improved, monitor_mode
from modelyard.training.checkpoint import TrainState, link_best, load_checkpoint, save_checkpoint
from modelyard.training.optim import build_optimizer, build_scheduler
from modelyard.training.progress import TrainingProgress
from modelyard.training.sampler import EpochBatchSampler


def make_accelerator(tc):
    """An Accelerator for `train.device` and `train.precision` (bf16/fp16 only where the device has it)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a second train() in one process may ask for another precision
    has_cuda = torch.cuda.is_available()
    if tc.device == "cuda" and not has_cuda:
        raise ConfigError("train.device is 'cuda' but no GPU is visible; set train.device to auto or cpu")
    cpu = tc.device == "cpu" or not has_cuda
    if tc.precision == "auto":
        mixed = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    else:
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[tc.precision]
    if cpu and mixed == "fp16":
        raise ConfigError("train.precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return Accelerator(cpu=cpu, mixed_precision=mixed)


class TrainingLoop:
    def __init__(self, cfg, bundle, model, run, accelerator, *, callbacks: list[Callback] = (), resume: bool = False,
                 quiet: bool = False):
        self.cfg, self.bundle, self.run_dir, self.acc = cfg, bundle, run, accelerator
        self.tc = cfg.train
        self.task = bundle.task  # classification: logits (B, C); lm: next-token logits (B, T, vocab)
        if self.task == "lm" and self.tc.monitor == "val_f1_macro":
            raise ConfigError("train.monitor val_f1_macro needs classes; a language model has none. "
                              "Use val_loss or val_perplexity")
        if self.task == "classification" and self.tc.monitor == "val_perplexity":
            raise ConfigError("train.monitor val_perplexity is for language models; use val_loss or val_accuracy")
        self.callbacks = list(callbacks)
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.sampler = EpochBatchSampler(len(bundle.train), self.tc.batch_size, seed=cfg.seed,
                                         rank=self.rank, world=self.world)
        self.micro_per_epoch = len(self.sampler)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.tc.grad_accum_steps)
        # Examples per accumulation window, so every example weighs the same, a short last batch included.
        sizes = [self.sampler.global_size(i) for i in range(self.micro_per_epoch)]
        self.window_examples = [sum(sizes[i:i + self.tc.grad_accum_steps])
                                for i in range(0, len(sizes), self.tc.grad_accum_steps)]
        optimizer = build_optimizer(self.tc, model)
        self.scheduler = build_scheduler(self.tc, optimizer, self.steps_per_epoch)
        self.model = accelerator.prepare(model)
        # Accelerate's optimizer wrapper is needed only to drive fp16's GradScaler (DDP's gradient all-reduce
        # lives in the wrapped model). Elsewhere its per-step bookkeeping took bench/overhead.py's ratio from
        # 1.10 to 1.15 on the CPU, so the plain torch optimizer steps.
        self.optimizer = accelerator.prepare(optimizer) if accelerator.mixed_precision == "fp16" else optimizer
        self.state = TrainState()
        if resume:  # after prepare: the optimiser state must land on the device the parameters now live on
            self.state = load_checkpoint(run.checkpoints / "last", self.module, self.optimizer, self.scheduler)
            if self.rank != 0:  # partial-epoch sums were reduced over all processes before saving
                self.state.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.mode = monitor_mode(self.tc.monitor)
        self.progress = TrainingProgress(enabled=accelerator.is_main_process and not quiet, total_epochs=self.tc.epochs,
                                         steps_per_epoch=self.micro_per_epoch, monitor=self.tc.monitor)

    @property
    def module(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.model)

    def fit(self) -> TrainState:
        tc, st = self.tc, self.state
        for cb in self.callbacks:
            cb.on_train_start(self)
        try:
            for epoch in range(st.epoch, tc.epochs):
                if st.stopped_early:
                    break
                t0 = epoch_start = time.perf_counter()  # t0 restarts at each mid-epoch checkpoint
                self.sampler.set_epoch(epoch, start_batch=st.batch_in_epoch)
                loader = self._loader(epoch)
                self.progress.start_epoch(epoch, st.batch_in_epoch)
                self.model.train()
                # Running sums stay on the device and are read once per epoch: no per-step host sync.
                sums = torch.tensor([st.partial["loss_sum"], st.partial["correct"], st.partial["seen"]],
                                    dtype=torch.float64, device=self.acc.device)
                for x, y in loader:
                    self._micro_step(x, y, sums)
                    if self._at_step_boundary():
                        self._optimizer_step()
                        for cb in self.callbacks:
                            cb.on_step_end(self)
                        if tc.checkpoint_every_steps and st.step % tc.checkpoint_every_steps == 0 \
                                and st.batch_in_epoch < self.micro_per_epoch:
                            st.train_time_s += time.perf_counter() - t0
                            t0 = time.perf_counter()
                            self._save_last(partial=sums)
                    if self.progress.bar:
                        self.progress.step(float(sums[0] / sums[2]))
                st.train_time_s += time.perf_counter() - t0
                self._end_epoch(epoch, sums, time.perf_counter() - epoch_start)
        finally:
            self.progress.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return st

    def _loader(self, epoch: int) -> DataLoader:
        # Its own generator: iter(DataLoader) would otherwise draw worker seeds from the global RNG,
        # and a run resumed mid-epoch would then see different dropout masks than an uninterrupted one.
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
        return DataLoader(self.bundle.train, sampler=self.sampler, batch_size=None,
                          num_workers=self.cfg.data.num_workers, generator=g)

    def _micro_step(self, x, y, sums: torch.Tensor) -> None:
        st, tc = self.state, self.tc
        device = self.acc.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        window_start = (st.batch_in_epoch // tc.grad_accum_steps) * tc.grad_accum_steps
        window = min(tc.grad_accum_steps, self.micro_per_epoch - window_start)
        boundary = st.batch_in_epoch + 1 == window_start + window
        sync = contextlib.nullcontext() if boundary or self.world == 1 else self.acc.no_sync(self.model)
        with sync:
            logits = self.model(x).float()  # (B, C), or (B, T, vocab) for a language model
            loss_sum = F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum")
            per_example = y[0].numel()  # 1 label, or T next tokens: each token weighs the same
            loss = loss_sum * (self.world / (self.window_examples[window_start // tc.grad_accum_steps] * per_example))
            if tc.l1:
                loss = loss + tc.l1 * sum(p.abs().sum() for p in self.params) / window
            self.acc.backward(loss)
        st.batch_in_epoch += 1
        sums[0] += loss_sum.detach()
        sums[1] += (logits.argmax(dim=-1) == y).sum()
        sums[2] += y.numel()

    def _at_step_boundary(self) -> bool:
        done = self.state.batch_in_epoch
        return done % self.tc.grad_accum_steps == 0 or done == self.micro_per_epoch

    def _optimizer_step(self) -> None:
        if self.tc.grad_clip:
            self.acc.clip_grad_norm_(self.params, self.tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1

    def _end_epoch(self, epoch: int, sums: torch.Tensor, seconds: float) -> None:
        st, tc = self.state, self.tc
        sums = self._reduce(sums)
        row = {
            "epoch": epoch + 1,
            "step": st.step,
            "lr": self.scheduler.get_last_lr()[0],
            "train_loss": float(sums[0] / sums[2]),
            "train_accuracy": float(sums[1] / sums[2]),
            **self._validate(),
            "epoch_time_s": seconds,
        }
        st.epoch, st.batch_in_epoch = epoch + 1, 0
        st.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        value = row[tc.monitor]
        is_best = improved(value, st.best_value, self.mode, tc.early_stopping.min_delta)
        if is_best:
            st.best_value, st.best_epoch, st.bad_epochs = value, epoch + 1, 0
        else:
            st.bad_epochs += 1
        if tc.early_stopping.patience and st.bad_epochs >= tc.early_stopping.patience:
            st.stopped_early = True
            self.progress.note(f"early stopping: {tc.monitor} has not improved for {st.bad_epochs} epochs")
        if self.acc.is_main_process:
            self.run_dir.append_history(row)
        self._save_last(best=is_best)
        self.progress.end_epoch(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)

    def _validate(self) -> dict:
        if self.task == "lm":
            loss, accuracy, _ = lm_eval(self.module, self.bundle.val, device=self.acc.device)
            return {"val_loss": loss, "val_accuracy": accuracy, "val_perplexity": math.exp(min(loss, 50.0))}
        y, prob, val_loss = predict_dataset(self.module, self.bundle.val, device=self.acc.device,
                                            batch_size=max(1024, self.tc.batch_size))
        pred = prob.argmax(axis=1)
        return {"val_loss": val_loss, "val_accuracy": float((pred == y).mean()),
                "val_f1_macro": f1_macro(y, pred, prob.shape[1])}

    def _reduce(self, sums: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return sums.cpu()
        return self.acc.reduce(sums.clone(), reduction="sum").cpu()

    def _save_last(self, partial: torch.Tensor | None = None, best: bool = False) -> None:
        if partial is not None:
            total = self._reduce(partial)
            self.state.partial = {"loss_sum": float(total[0]), "correct": int(total[1]), "seen": int(total[2])}
        if self.acc.is_main_process:
            save_checkpoint(self.run_dir.checkpoints / "last", self.module, self.optimizer, self.scheduler, self.state)
            if best:
                link_best(self.run_dir.checkpoints / "last", self.run_dir.checkpoints / "best")
        self.acc.wait_for_everyone()
