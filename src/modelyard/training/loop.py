"""One training loop for every model, on Accelerate: CPU, one GPU, or several processes (DDP).

It reads like a plain PyTorch loop. The loss of each process's shard is summed and divided by the
global batch size (times the world size, which DDP's gradient averaging divides back out), so W
processes take exactly the optimiser steps one process takes on the same global batches.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time

import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader

from modelyard.errors import ConfigError
from modelyard.inference import lm_eval, predict_dataset
from modelyard.metrics.classification import f1_macro
from modelyard.training.callbacks import Callback, improved, monitor_mode
from modelyard.training.checkpoint import TrainState, cpu_weights, load_checkpoint, save_checkpoint
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
    if tc.privacy is not None and tc.precision in ("bf16", "fp16"):
        raise ConfigError("train.privacy trains in fp32 (per-example gradients); set train.precision to fp32 or auto")
    if tc.precision == "auto":
        mixed = "no" if cpu or tc.privacy is not None else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    else:
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[tc.precision]
    if cpu and mixed == "fp16":
        raise ConfigError("train.precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return Accelerator(cpu=cpu, mixed_precision=mixed)


class RunningSums:
    """The epoch's training loss sum, correct predictions and examples seen. The first two stay on the device and
    are read only at the epoch's end, a checkpoint or a progress-bar update: a step costs no host sync."""

    def __init__(self, partial: dict, device) -> None:
        self.loss = torch.tensor(partial["loss_sum"], dtype=torch.float64, device=device)
        self.correct = torch.tensor(partial["correct"], dtype=torch.int64, device=device)
        self.seen = int(partial["seen"])

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss.add_(loss_sum.detach())
        self.correct.add_((logits.argmax(dim=-1) == y).sum())
        self.seen += y.numel()

    def mean_loss(self) -> float:
        return float(self.loss) / self.seen

    def as_tensor(self) -> torch.Tensor:
        """(loss sum, correct, seen) as float64, the form processes sum over."""
        seen = torch.tensor(float(self.seen), dtype=torch.float64, device=self.loss.device)
        return torch.stack([self.loss, self.correct.double(), seen])


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
        self.teacher = None
        if self.tc.distill is not None:  # loaded here, so a resume reloads it too
            from modelyard.training.distill import Teacher

            self.teacher = Teacher.load(self.tc.distill, bundle, model, device=accelerator.device,
                                        autocast=accelerator.autocast)
            bundle.notes.extend(self.teacher.notes)  # printed under the run summary with the data's notes
        self.private = None
        if self.tc.privacy is not None:  # checked and fixed before the optimiser sees the parameters
            from modelyard.training.privacy import PrivateTraining

            self.private = PrivateTraining(cfg, bundle, accelerator)
            model = self.private.prepare_model(model, cfg.model.name)
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
        # Likewise Accelerate's backward divides the loss by its own accumulation steps (1 here: the loop
        # accumulates itself), an extra autograd node a step; only fp16's loss scaling needs it.
        plain = accelerator.scaler is None and accelerator.distributed_type in (
            DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
        self._backward = torch.Tensor.backward if plain else accelerator.backward
        if self.private is not None:
            self.model, self.optimizer = self.private.make_private(self.model, self.optimizer, self.tc.batch_size,
                                                                   self.tc.epochs, cfg.model.name)
            bundle.notes.extend(self.private.notes)
        self.ema = None
        if self.tc.ema_decay:  # torch's own weight averaging; buffers (BatchNorm statistics) are averaged too
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(self.tc.ema_decay),
                                     use_buffers=True)
        self.state = TrainState()
        self._saved_at = None  # the (step, epoch, batch) that `last` on disk holds
        if resume:  # after prepare: the optimiser state must land on the device the parameters now live on
            self.state = load_checkpoint(run.checkpoints, self.module, self.optimizer, self.scheduler, ema=self.ema)
            from modelyard.training.privacy import restore_accountant

            restore_accountant(self.private, self.state)
            self._saved_at = self._position()
            if self.rank != 0:  # partial-epoch sums were reduced over all processes before saving
                self.state.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self._best_weights = None  # a CPU copy of the best weights, until a save writes them
        self._stop_signal: str | None = None  # "SIGINT" or "SIGTERM" once a stop was asked for
        self._epoch_first_step = self.state.step + 1
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.mode = monitor_mode(self.tc.monitor)
        self.progress = TrainingProgress(enabled=accelerator.is_main_process and not quiet, total_epochs=self.tc.epochs,
                                         steps_per_epoch=self.micro_per_epoch, monitor=self.tc.monitor)

    @property
    def module(self) -> torch.nn.Module:
        module = self.acc.unwrap_model(self.model)
        return module._module if self.private is not None else module  # Opacus' GradSampleModule holds the model

    @property
    def evaluated(self) -> torch.nn.Module:
        """What validation scores and the best checkpoint keeps: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.module

    def fit(self) -> TrainState:
        """Train to `train.epochs` (or early stopping) and save `last` at the end; returns the loop state.

        Raises:
            ConfigError: the loss or the weights became NaN or infinite (the learning rate is too high).
            KeyboardInterrupt: Ctrl-C or SIGTERM; `last` was saved at the step under way when one could be.
        """
        tc, st = self.tc, self.state
        for cb in self.callbacks:
            cb.on_train_start(self)
        self._next_save = time.monotonic() + (tc.checkpoint_every_seconds or math.inf)
        try:
            with self._stop_on_signal():
                for epoch in range(st.epoch, tc.epochs):
                    if st.stopped_early or self._stop_signal:
                        break
                    self._run_epoch(epoch)
                self._save_last()  # always at the end, early stop included; a no-op when this state is saved
                if self._stop_signal:
                    raise KeyboardInterrupt(f"{self._stop_signal}: stopped at step {st.step}, checkpoint saved")
        finally:
            self.progress.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return st

    def _run_epoch(self, epoch: int) -> None:
        st = self.state
        t0 = epoch_start = time.perf_counter()  # t0 restarts after each mid-epoch checkpoint
        self._epoch_first_step = st.step + 1
        self.sampler.set_epoch(epoch, start_batch=st.batch_in_epoch)
        loader = self._loader(epoch)
        self.progress.start_epoch(epoch, st.batch_in_epoch)
        self.model.train()
        sums = RunningSums(st.partial, self.acc.device)
        for x, y in loader:
            self._micro_step(x, y, sums)
            if self._at_step_boundary():
                self._optimizer_step()
                for cb in self.callbacks:
                    cb.on_step_end(self)
                # A save due at the epoch's last step waits for the epoch end, where the checkpoint also holds
                # the validation result and the best weights.
                if st.batch_in_epoch < self.micro_per_epoch and self._save_due():
                    st.train_time_s += time.perf_counter() - t0
                    self._save_last(partial=sums, epoch=epoch)
                    t0 = time.perf_counter()
                    if self._stop_signal:
                        return
            # The bar reads the loss anyway, so it also catches divergence at its step; one process only, since a
            # rank that stopped here alone would leave the others waiting in their next all-reduce.
            if self.progress.bar and self.world == 1:
                loss = sums.mean_loss()
                if not math.isfinite(loss):
                    self._diverged(epoch, "training loss", loss)
                self.progress.step(loss)
        st.train_time_s += time.perf_counter() - t0
        self._end_epoch(epoch, sums, time.perf_counter() - epoch_start)

    def _save_due(self) -> bool:
        """Whether to save `last` now: Ctrl-C, every `checkpoint_every_steps`, or `checkpoint_every_seconds` gone by.

        With several processes the clock is read at epoch ends only, with rank 0's answer, so every process
        agrees without a collective call per step.
        """
        tc, st = self.tc, self.state
        if self._stop_signal or (tc.checkpoint_every_steps and st.step % tc.checkpoint_every_steps == 0):
            return True
        if self.world == 1:
            return time.monotonic() >= self._next_save
        if st.batch_in_epoch < self.micro_per_epoch:
            return False
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([time.monotonic() >= self._next_save])[0]

    def _loader(self, epoch: int) -> DataLoader:
        # Its own generator: iter(DataLoader) would otherwise draw worker seeds from the global RNG,
        # and a run resumed mid-epoch would then see different dropout masks than an uninterrupted one.
        if self.private is not None:
            return self.private.loader(epoch, self.state.batch_in_epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
        return DataLoader(self.bundle.train, sampler=self.sampler, batch_size=None,
                          num_workers=self.cfg.data.num_workers, generator=g)

    def _micro_step(self, x, y, sums: RunningSums) -> None:
        st, tc = self.state, self.tc
        device = self.acc.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        window_start = (st.batch_in_epoch // tc.grad_accum_steps) * tc.grad_accum_steps
        window = min(tc.grad_accum_steps, self.micro_per_epoch - window_start)
        boundary = st.batch_in_epoch + 1 == window_start + window
        sync = contextlib.nullcontext() if boundary or self.world == 1 else self.acc.no_sync(self.model)
        with sync:
            logits = self.model(x).float()  # (B, C), or (B, T, vocab) for a language model
            if self.teacher is not None:
                loss_sum = self.teacher.loss_sum(logits, x, y)
            else:
                loss_sum = F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum")
            per_example = y.numel() // max(len(y), 1)  # 1 label, or T next tokens: each token weighs the same
            if self.private is not None:  # a Poisson batch's own mean: Opacus rescales it to per-example gradients
                loss = loss_sum / max(y.numel(), 1)
            else:
                loss = loss_sum * (self.world / (self.window_examples[window_start // tc.grad_accum_steps]
                                                 * per_example))
            if tc.l1:
                loss = loss + tc.l1 * sum(p.abs().sum() for p in self.params) / window
            self._backward(loss)
        st.batch_in_epoch += 1
        sums.add(loss_sum, logits, y)

    def _at_step_boundary(self) -> bool:
        done = self.state.batch_in_epoch
        return done % self.tc.grad_accum_steps == 0 or done == self.micro_per_epoch

    def _optimizer_step(self) -> None:
        if self.tc.grad_clip:
            self.acc.clip_grad_norm_(self.params, self.tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        self.state.step += 1

    def _end_epoch(self, epoch: int, sums: RunningSums, seconds: float) -> None:
        st, tc = self.state, self.tc
        sums = self._reduce(sums.as_tensor())
        train_loss = float(sums[0] / sums[2])
        if not math.isfinite(train_loss):
            self._diverged(epoch, "training loss", train_loss)
        row = {
            "epoch": epoch + 1,
            "step": st.step,
            "lr": self.scheduler.get_last_lr()[0],
            "train_loss": train_loss,
            "train_accuracy": float(sums[1] / sums[2]),
            **self._validate(),
            "epoch_time_s": seconds,
        }
        if self.private is not None:
            row["epsilon"] = self.private.epsilon()
        if not math.isfinite(row["val_loss"]):  # the epoch's last step can break the weights after its loss was read
            self._diverged(epoch, "validation loss", row["val_loss"])
        st.epoch, st.batch_in_epoch = epoch + 1, 0
        st.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        value = row[tc.monitor]
        if improved(value, st.best_value, self.mode, tc.early_stopping.min_delta):
            st.best_value, st.best_epoch, st.best_step, st.bad_epochs = value, epoch + 1, st.step, 0
            if self.acc.is_main_process:  # kept in memory; written with the next checkpoint
                self._best_weights = cpu_weights(self.evaluated)
        else:
            st.bad_epochs += 1
        if tc.early_stopping.patience and st.bad_epochs >= tc.early_stopping.patience:
            st.stopped_early = True
            self.progress.note(f"early stopping: {tc.monitor} has not improved for {st.bad_epochs} epochs")
        if self.acc.is_main_process:
            self.run_dir.append_history(row)
        if self._save_due():
            self._save_last(epoch=epoch)
        self.progress.end_epoch(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)

    def _validate(self) -> dict:
        if self.task == "lm":
            loss, accuracy, _ = lm_eval(self.evaluated, self.bundle.val, device=self.acc.device)
            return {"val_loss": loss, "val_accuracy": accuracy, "val_perplexity": math.exp(min(loss, 50.0))}
        y, prob, val_loss = predict_dataset(self.evaluated, self.bundle.val, device=self.acc.device,
                                            batch_size=max(1024, self.tc.batch_size))
        pred = prob.argmax(axis=1)
        return {"val_loss": val_loss, "val_accuracy": float((pred == y).mean()),
                "val_f1_macro": f1_macro(y, pred, prob.shape[1])}

    def _reduce(self, sums: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return sums.cpu()
        return self.acc.reduce(sums.clone(), reduction="sum").cpu()

    def _position(self) -> tuple[int, int, int]:
        return self.state.step, self.state.epoch, self.state.batch_in_epoch

    def _save_last(self, partial: RunningSums | None = None, epoch: int | None = None) -> None:
        """Save `last` (and the best weights, if newer than the saved ones), unless this state is already saved.

        Nothing NaN is ever written: the partial-epoch loss and the weights are checked first.
        """
        st = self.state
        if self._saved_at == self._position():
            return
        epoch = st.epoch if epoch is None else epoch
        if partial is not None:
            total = self._reduce(partial.as_tensor())
            st.partial = {"loss_sum": float(total[0]), "correct": int(total[1]), "seen": int(total[2])}
            if not math.isfinite(st.partial["loss_sum"]):
                self._diverged(epoch, "training loss", st.partial["loss_sum"] / max(st.partial["seen"], 1))
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            self._diverged(epoch, "model weights", math.nan)
        if self._stop_signal:
            self.progress.note(f"{self._stop_signal}: saving a checkpoint at step {st.step}, then stopping")
        if self.private is not None:
            st.privacy_history = self.private.history
        if self.acc.is_main_process:
            save_checkpoint(self.run_dir.checkpoints, self.module, self.optimizer, self.scheduler, st,
                            best_weights=self._best_weights, ema=self.ema)
        self._best_weights = None
        self._saved_at = self._position()
        self._next_save = time.monotonic() + (self.tc.checkpoint_every_seconds or math.inf)
        self.acc.wait_for_everyone()

    def _diverged(self, epoch: int, what: str, value: float) -> None:
        kept = (f"the last good checkpoint (step {self._saved_at[0]}) is kept in {self.run_dir.checkpoints}"
                if self._saved_at else "no checkpoint had been written yet")
        default = type(self.tc).model_fields["lr"].default
        raise ConfigError(
            f"training diverged: the {what} became {value} in epoch {epoch + 1} (optimizer steps "
            f"{self._epoch_first_step}-{self.state.step}); {kept}. Lower train.lr (it is {self.tc.lr:g}; the "
            f"default is {default:g}) or set train.grad_clip, then train again")

    @contextlib.contextmanager
    def _stop_on_signal(self):
        """Ctrl-C or SIGTERM asks to stop: the step under way finishes, `last` is saved, then KeyboardInterrupt is
        raised. A second Ctrl-C stops at once. Only for one process, in the main thread, and only for a signal
        nobody else has claimed."""
        if self.world > 1 or threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped at once")
            self._stop_signal = signal.Signals(signum).name

        previous = {sig: signal.signal(sig, request_stop)
                    for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))
                    if signal.getsignal(sig) is default}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
