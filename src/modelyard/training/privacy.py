"""Differentially private training (`train.privacy`) on Opacus: DP-SGD with Poisson-sampled batches.

The loop stays the loop: this module checks what DP-SGD cannot take before any step, swaps the layers Opacus
cannot give per-example gradients for (BatchNorm mixes examples; GroupNorm does not), wraps model and optimiser,
draws each epoch's Poisson batches, and keeps the accountant. The accountant's history is a list of
(noise multiplier, sample rate, steps) numbers, saved in the checkpoint's state.json so a resumed run reports the
epsilon an uninterrupted one would.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import DataLoader

from modelyard.errors import ConfigError

# Opacus' hooks see inputs that need no gradient (the first layer's): harmless, and torch would say so each run.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to "
                        "module outputs since no inputs require gradients", category=UserWarning)


def refuse_estimator(cfg) -> None:
    """An estimator (tfidf-linear) is fitted by scikit-learn in one call: there is no gradient step to privatise."""
    if cfg.train.privacy is not None:
        raise ConfigError(f"train.privacy needs a model trained by gradient steps; model {cfg.model.name!r} is "
                          f"fitted by scikit-learn. Remove train.privacy or choose a torch model (e.g. mlp)")


def fix_layers(model: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """The model with the layers Opacus' validator can fix replaced (BatchNorm -> GroupNorm), and notes saying
    which were. The same call rebuilds a saved private model's architecture (see `modelyard.artifact`)."""
    from opacus.validators import ModuleValidator

    before = {name: type(m).__name__ for name, m in model.named_modules()}
    fixed = ModuleValidator.fix(model)
    after = {name: type(m).__name__ for name, m in fixed.named_modules()}
    swapped = [f"{name} ({before[name]} -> {after[name]})" for name in before
               if name in after and before[name] != after[name]]
    notes = []
    if swapped:
        notes.append(f"privacy: replaced {len(swapped)} layer(s) DP-SGD cannot train with per-example gradients: "
                     f"{', '.join(swapped)}")
    return fixed, notes


class PrivateTraining:
    """One run's DP-SGD: the Opacus engine, its sample rate, and the per-epoch Poisson batches."""

    def __init__(self, cfg, bundle, accelerator) -> None:
        self.settings = cfg.train.privacy
        self.seed = cfg.seed
        self.num_workers = cfg.data.num_workers
        self.dataset = bundle.train
        self.n = len(bundle.train)
        _refuse_what_dp_sgd_cannot_take(cfg.train, self.n, accelerator)
        self.engine = None
        self.notes: list[str] = []

    def prepare_model(self, model: torch.nn.Module, where: str) -> torch.nn.Module:
        """Fix the layers Opacus can fix; a ConfigError naming the ones it cannot."""
        from opacus.validators import ModuleValidator

        model, self.notes = fix_layers(model)
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            listed = "; ".join(sorted({str(p) for p in problems}))
            raise ConfigError(f"train.privacy: model {where!r} has layers Opacus cannot compute per-example gradients "
                              f"for: {listed}. Choose another model (mlp, logreg, lenet5, cifar-cnn train privately) "
                              f"or remove train.privacy")
        return model

    def make_private(self, model, optimizer, batch_size: int, epochs: int, where: str):
        """The model as a GradSampleModule and the optimiser as a DPOptimizer (loss reduction: mean)."""
        from opacus import PrivacyEngine

        with warnings.catch_warnings():  # the secure RNG (torchcsprng) is for production runs; say so in docs instead
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant="rdp")
        base = DataLoader(self.dataset, batch_size=batch_size)  # only its length: sample rate = 1 / batches
        s = self.settings
        with warnings.catch_warnings():  # the bound is valid at the largest order too, only less tight
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            try:
                model, optimizer = self._wrap(model, optimizer, base, epochs)
            except NotImplementedError as exc:  # a trainable layer with neither a grad sampler nor a functorch rule
                raise ConfigError(f"train.privacy: Opacus cannot compute per-example gradients for this model: "
                                  f"{exc}. Choose another model or remove train.privacy") from None
        self._probe(model, optimizer, where)
        self.sample_rate = 1 / len(base)
        self.batches_per_epoch = len(base)
        self.noise_multiplier = optimizer.noise_multiplier
        self.notes.append(f"privacy: DP-SGD, noise multiplier {self.noise_multiplier:.3g}, per-example gradients "
                          f"clipped to {s.max_grad_norm:g}, Poisson batches (rate {self.sample_rate:.3g}), "
                          f"delta {s.delta:g}")
        return model, optimizer

    def _probe(self, model, optimizer, where: str) -> None:
        """One backward pass on two training examples: every trainable parameter must get one gradient per example.
        A layer that puts another axis first (some attention blocks put the sequence first) would otherwise fail
        at the first step with a shape error, or mix examples. Forked RNG: the run draws the same numbers."""
        import torch.nn.functional as F

        device = next(model.parameters()).device
        x, y = self.dataset[torch.arange(min(2, self.n))]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            try:
                logits = model(x.to(device)).float()
                F.cross_entropy(logits.flatten(0, -2), y.to(device).flatten()).backward()
            except (ValueError, RuntimeError) as exc:  # Opacus' hooks meet a layer they cannot follow
                raise ConfigError(f"train.privacy: Opacus cannot compute per-example gradients for model {where!r}: "
                                  f"{exc}. Models that train privately: mlp, logreg, lenet5, cifar-cnn; remove "
                                  f"train.privacy or choose one of them") from None
        wrong = [name for name, p in model.named_parameters()
                 if p.requires_grad and (getattr(p, "grad_sample", None) is None or p.grad_sample.shape[0] != len(y))]
        optimizer.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.grad = None
        if wrong:
            listed = ", ".join(name.removeprefix("_module.") for name in wrong[:6]) + (", ..." if len(wrong) > 6 else "")
            raise ConfigError(f"train.privacy: Opacus cannot give model {where!r} one gradient per example for "
                              f"{listed}. Models that train privately: mlp, logreg, lenet5, cifar-cnn "
                              f"(BatchNorm becomes GroupNorm); remove train.privacy or choose one of them")

    def _wrap(self, model, optimizer, base, epochs):
        s = self.settings
        if s.target_epsilon is not None:
            model, optimizer, _ = self.engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=base, target_epsilon=s.target_epsilon,
                target_delta=s.delta, epochs=epochs, max_grad_norm=s.max_grad_norm, poisson_sampling=True)
        else:
            model, optimizer, _ = self.engine.make_private(
                module=model, optimizer=optimizer, data_loader=base, noise_multiplier=s.noise_multiplier,
                max_grad_norm=s.max_grad_norm, poisson_sampling=True)
        return model, optimizer

    def loader(self, epoch: int, start_batch: int) -> DataLoader:
        """The epoch's Poisson-sampled batches, drawn from a generator seeded by run seed and epoch, so a run
        resumed mid-epoch skips exactly the batches it already took."""
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        sampler = UniformWithReplacementSampler(num_samples=self.n, sample_rate=self.sample_rate, generator=g,
                                                steps=self.batches_per_epoch)
        batches = [torch.tensor(b, dtype=torch.long) for b in list(sampler)[start_batch:]]
        # Its own generator too: iter(DataLoader) would otherwise draw from the global RNG, which the noise uses.
        return DataLoader(self.dataset, sampler=batches, batch_size=None, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))

    def epsilon(self) -> float:
        if not self.engine.accountant.history:
            return 0.0
        with warnings.catch_warnings():  # the bound is valid at the largest order too, only less tight
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return float(self.engine.get_epsilon(self.settings.delta))

    @property
    def history(self) -> list[list]:
        """The accountant's history as JSON numbers: [[noise multiplier, sample rate, steps], ...]."""
        return [list(h) for h in self.engine.accountant.history]

    def restore(self, history: list) -> None:
        self.engine.accountant.history = [tuple(h) for h in history]

    def facts(self) -> dict:
        """metrics.json's `privacy`."""
        s = self.settings
        return {"epsilon": self.epsilon(), "delta": s.delta, "target_epsilon": s.target_epsilon,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": s.max_grad_norm,
                "sample_rate": self.sample_rate, "accountant": "rdp", "notes": list(self.notes)}


def restore_accountant(private: PrivateTraining | None, state) -> None:
    """On resume: the accountant continues from the checkpoint's history. Privacy cannot be switched on or off
    midway: steps taken without noise have no epsilon, and dropping the section would hide what was spent."""
    if private is None:
        if state.privacy_history:
            raise ConfigError("this run was trained with train.privacy; a resume must keep it (remove the "
                              "--set that drops it)")
        return
    if state.step and not state.privacy_history:
        raise ConfigError(f"train.privacy cannot be added on a resume: the run's first {state.step} steps were "
                          f"taken without noise, so no epsilon holds for it. Train anew with train.privacy")
    private.restore(state.privacy_history)


def _refuse_what_dp_sgd_cannot_take(tc, n: int, accelerator) -> None:
    s = tc.privacy
    fixes = {
        "grad_accum_steps": (tc.grad_accum_steps > 1, "Poisson sampling draws each step's batch whole; "
                             "set train.grad_accum_steps to 1 and choose train.batch_size directly"),
        "ema_decay": (tc.ema_decay is not None, "a weight average is not supported with privacy yet; remove it"),
        "distill": (tc.distill is not None, "distillation is not supported with privacy yet; remove it"),
        "grad_clip": (tc.grad_clip is not None, "DP-SGD clips each example's gradient instead; remove it and set "
                      "train.privacy.max_grad_norm"),
        "l1": (tc.l1 > 0, "a penalty outside the per-example loss escapes clipping and noise; set it to 0 "
               "(train.weight_decay works)"),
    }
    for key, (bad, how) in fixes.items():
        if bad:
            raise ConfigError(f"train.privacy cannot be combined with train.{key}: {how}")
    if accelerator.num_processes > 1:
        raise ConfigError(f"train.privacy runs in one process; this run has {accelerator.num_processes}. "
                          f"Start it without accelerate launch / torchrun")
    if s.delta >= 1 / n:
        raise ConfigError(f"train.privacy.delta is {s.delta:g}, not below 1/n = {1 / n:.3g} for n = {n} training "
                          f"examples: such a delta allows leaking an example outright. Set delta below {1 / n:.3g} "
                          f"(1e-5 is usual)")
