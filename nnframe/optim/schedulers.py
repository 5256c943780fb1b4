"""Learning-rate schedulers with PyTorch's names, arguments and learning-rate sequences.

A scheduler sets ``group["lr"]`` of every parameter group of an optimizer. As in PyTorch,
constructing one already applies the rate of step 0, and each ``step()`` advances one epoch (or
one batch, for OneCycleLR and the like). The first scheduler built on an optimizer records each
group's original rate as ``group["initial_lr"]``; every scheduler computes from those base rates
(closed forms of PyTorch's formulas), so ``SequentialLR`` can hand over from one to the next.

Example:
    >>> import numpy as np, nnframe as nf
    >>> opt = nf.optim.SGD([nf.Parameter(np.zeros(1))], lr=0.1)
    >>> sched = nf.optim.StepLR(opt, step_size=2, gamma=0.5)
    >>> rates = []
    >>> for epoch in range(5):
    ...     rates.append(sched.get_last_lr()[0])
    ...     sched.step()
    >>> rates
    [0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import bisect
import copy
import math
import types
from collections.abc import Callable, Sequence

from nnframe.core.errors import check_hyper
from nnframe.io import schema as S
from nnframe.optim.optimizer import Optimizer, check_lrs

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "LinearLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
]


def _check_optimizer(who: str, optimizer) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: expected an nnframe Optimizer, got {type(optimizer).__name__}")


class _SavedState:
    """``load_state_dict`` for schedulers: the stored state must have exactly the keys and
    kinds this scheduler writes (settings such as ``mode`` unchanged, rates finite and >= 0);
    it is validated completely before any attribute is set (nnframe.io.schema)."""

    _finite_state = True

    def check_state_dict(self, state_dict) -> dict:
        """``state_dict`` validated (nothing applied); returns what ``apply_state_dict`` sets."""
        who = f"{type(self).__name__}.load_state_dict"
        spec = S.like(self.state_dict(), finite=self._finite_state, same_strings=True)
        checked = S.validate(spec, state_dict, who)
        for key in ("base_lrs", "_last_lr", "min_lrs"):
            if key in checked:
                try:
                    check_lrs(who, checked[key], negative=key == "_last_lr")
                except ValueError as e:
                    raise S.SchemaError(f"{e} in {key}") from None
        self._trial_rates(checked, who)
        return checked

    def apply_state_dict(self, checked: dict) -> None:
        self.__dict__.update(checked)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores a state saved by ``state_dict``: validated completely, then applied."""
        self.apply_state_dict(self.check_state_dict(state_dict))

    def _trial_rates(self, checked: dict, who: str) -> None:
        """Computes the rates of the loaded state's current and next step on a stand-in (the
        optimizer is not touched): a state whose numbers agree with their kinds but not with
        each other (a zero step size, an overflowing power) is refused now, not at a step."""
        if not hasattr(self, "get_lr"):  # ReduceLROnPlateau: no closed form to try
            return
        trial = copy.copy(self)
        trial.__dict__.update(copy.deepcopy(checked))
        groups = [
            {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
        ]
        trial.optimizer = types.SimpleNamespace(param_groups=groups)
        for _ in range(2):
            try:
                check_lrs(who, trial.get_lr(), negative=True)
            except NotImplementedError:  # a scheduler that delegates (SequentialLR)
                return
            except KeyError as e:  # a setting that needs an option this optimizer lacks
                raise S.SchemaError(
                    f"{who}: expected a state that fits this optimizer, got one that needs its "
                    f"option {e} (which {type(self.optimizer).__name__} does not have)"
                ) from None
            except (ValueError, OverflowError, ZeroDivisionError, TypeError, IndexError) as e:
                raise S.SchemaError(
                    f"{who}: expected a state giving finite rates, got {e}"
                ) from None
            trial.last_epoch += 1


class LRScheduler(_SavedState):
    """Base class: a subclass writes ``lr_at(base_lr, epoch)``, the rate at step ``epoch``.

    ``last_epoch`` counts the steps taken (0 right after construction); ``get_last_lr()`` returns
    the rates last set; ``state_dict()`` / ``load_state_dict()`` save and restore the position
    (everything but the optimizer, and callables, which cannot be saved).
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        _check_optimizer(type(self).__name__, optimizer)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.step()

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError(f"{type(self).__name__}.lr_at is not implemented")

    def get_lr(self) -> list[float]:
        """The rates for the current ``last_epoch``."""
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]

    def step(self, epoch: int | None = None) -> None:
        """Advances one step (or jumps to ``epoch``) and sets every group's rate; a rate that
        cannot be computed or is not finite raises ValueError and changes nothing."""
        previous = self.last_epoch
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        try:
            self._apply(self._rates())
        except ValueError:
            self.last_epoch = previous
            raise

    def _rates(self) -> list[float]:
        """``get_lr()``, with arithmetic failures (an overflowing power, a zero step size from a
        crafted state) reported as ValueError naming the scheduler."""
        try:
            return self.get_lr()
        except (OverflowError, ZeroDivisionError, TypeError) as e:
            raise ValueError(
                f"{type(self).__name__}.step: expected finite learning rates, got {e} at step "
                f"{self.last_epoch}"
            ) from None

    def _apply(self, lrs: Sequence[float]) -> None:
        lrs = check_lrs(type(self).__name__, lrs, negative=True)  # a NaN/Inf rate is never set
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    _unsaved = ("optimizer",)

    def state_dict(self) -> dict:
        """Everything but the optimizer (and callables)."""
        return {
            k: v
            for k, v in vars(self).items()
            if k not in self._unsaved and not callable(v) and not k.startswith("_fn")
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` (one function, or one per parameter group)."""

    def __init__(self, optimizer, lr_lambda: Callable | Sequence[Callable], last_epoch: int = -1):
        _check_optimizer("LambdaLR", optimizer)
        n = len(optimizer.param_groups)
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(fns) != n:
            raise ValueError(f"LambdaLR: expected {n} lr_lambda(s), got {len(fns)}")
        self._fn_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [b * fn(self.last_epoch) for b, fn in zip(self.base_lrs, self._fn_lambdas)]

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.pop("_fn_lambdas", None)
        return state


class StepLR(LRScheduler):
    """Multiplies the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        check_hyper("StepLR", "step_size", step_size, int(step_size) >= 1, "must be >= 1")
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiplies the rate by ``gamma`` at each epoch listed in ``milestones``."""

    def __init__(self, optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch=-1):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """Multiplies the rate by ``gamma`` every epoch: ``base_lr * gamma ** epoch``."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        check_hyper("ExponentialLR", "gamma", gamma, gamma > 0, "must be > 0")
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (SGDR without
    restarts; past ``T_max`` it rises again, as PyTorch's does)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        check_hyper("CosineAnnealingLR", "T_max", T_max, T_max > 0, "must be > 0")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        cos = 1 + math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * cos / 2


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing that restarts at ``base_lr`` after ``T_0`` epochs, then after
    ``T_0 * T_mult``, ``T_0 * T_mult**2``... epochs (SGDR)."""

    def __init__(self, optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch=-1):
        who = "CosineAnnealingWarmRestarts"
        check_hyper(who, "T_0", T_0, isinstance(T_0, int) and T_0 > 0, "must be an int > 0")
        check_hyper(who, "T_mult", T_mult, isinstance(T_mult, int) and T_mult >= 1, "must be >= 1")
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def position(self, epoch: float) -> tuple[float, float]:
        """(T_cur, T_i): epochs since the last restart and the length of the current cycle."""
        if epoch < self.T_0:
            return epoch, self.T_0
        if self.T_mult == 1:
            return epoch % self.T_0, self.T_0
        # cycles i = 0..n-1 end at T_0 (T_mult^n - 1) / (T_mult - 1)
        n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
        start = self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
        return epoch - start, self.T_0 * self.T_mult**n

    def lr_at(self, base_lr, epoch):
        t_cur, t_i = self.position(epoch)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2

    def step(self, epoch: float | None = None) -> None:
        """Advances one step, or jumps to a (possibly fractional) ``epoch``."""
        if epoch is None:
            epoch = self.last_epoch + 1
        if epoch < 0:
            raise ValueError(f"CosineAnnealingWarmRestarts.step: expected epoch >= 0, got {epoch}")
        self.last_epoch = math.floor(epoch)
        self._apply([self.lr_at(base, epoch) for base in self.base_lrs])


class LinearLR(LRScheduler):
    """Scales the rate linearly from ``start_factor * base_lr`` to ``end_factor * base_lr`` over
    ``total_iters`` steps (a warm-up), then keeps it."""

    def __init__(
        self,
        optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ):
        who = "LinearLR"
        check_hyper(who, "start_factor", start_factor, 0 < start_factor <= 1, "must be in (0, 1]")
        check_hyper(who, "end_factor", end_factor, 0 <= end_factor <= 1, "must be in [0, 1]")
        check_hyper(who, "total_iters", total_iters, total_iters >= 1, "must be >= 1")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        frac = min(self.total_iters, epoch) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class PolynomialLR(LRScheduler):
    """``base_lr * (1 - min(epoch, total_iters) / total_iters) ** power``."""

    def __init__(self, optimizer, total_iters: int = 5, power: float = 1.0, last_epoch=-1):
        check_hyper("PolynomialLR", "total_iters", total_iters, total_iters >= 1, "must be >= 1")
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        return base_lr * (1.0 - min(self.total_iters, epoch) / self.total_iters) ** self.power


class OneCycleLR(LRScheduler):
    """The 1cycle policy, stepped once per *batch*: warm up from ``max_lr / div_factor`` to
    ``max_lr`` over ``pct_start`` of the steps, then anneal to
    ``max_lr / div_factor / final_div_factor``; momentum (or Adam's beta1) cycles inversely
    between ``max_momentum`` and ``base_momentum`` when ``cycle_momentum``.

    Args:
        total_steps: the number of steps, or give ``epochs`` and ``steps_per_epoch``.
        anneal_strategy: 'cos' or 'linear'.
        three_phase: anneal back to the initial rate first, then to the minimum (fastai's
            variant is two-phase, the default).
    """

    def __init__(
        self,
        optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ):
        who = "OneCycleLR"
        _check_optimizer(who, optimizer)
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    f"{who}: expected total_steps, or epochs and steps_per_epoch, got neither"
                )
            total_steps = int(epochs) * int(steps_per_epoch)
        check_hyper(who, "total_steps", total_steps, total_steps > 0, "must be > 0")
        check_hyper(who, "pct_start", pct_start, 0 <= pct_start <= 1, "must be in [0, 1]")
        check_hyper(
            who, "anneal_strategy", anneal_strategy, anneal_strategy in ("cos", "linear"),
            "must be 'cos' or 'linear'",
        )  # fmt: skip
        self.total_steps = int(total_steps)
        self.anneal_strategy = anneal_strategy
        n = len(optimizer.param_groups)
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * n
        self.max_lrs = max_lrs
        self.initial_lrs = [m / div_factor for m in max_lrs]
        self.min_lrs = [i / final_div_factor for i in self.initial_lrs]
        self.cycle_momentum = cycle_momentum
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        if cycle_momentum:
            defaults = optimizer.defaults
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError(
                    f"{who}: expected an optimizer with momentum or betas for "
                    f"cycle_momentum=True, got {type(optimizer).__name__}"
                )
            self.use_beta1 = "betas" in defaults
        end1 = float(pct_start * self.total_steps) - 1
        if three_phase:  # (end step, start lr, end lr, start momentum, end momentum)
            self.phases = [
                (end1, "initial", "max", "max_m", "base_m"),
                (float(2 * pct_start * self.total_steps) - 2, "max", "initial", "base_m", "max_m"),
                (self.total_steps - 1, "initial", "min", "max_m", "max_m"),
            ]
        else:
            self.phases = [
                (end1, "initial", "max", "max_m", "base_m"),
                (self.total_steps - 1, "max", "min", "base_m", "max_m"),
            ]
        for group, initial in zip(optimizer.param_groups, self.initial_lrs):
            group["initial_lr"] = initial
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR.step: expected at most total_steps={self.total_steps} steps, "
                f"got {step}"
            )
        lrs = []
        for i, group in enumerate(self.optimizer.param_groups):
            values = {
                "initial": self.initial_lrs[i],
                "max": self.max_lrs[i],
                "min": self.min_lrs[i],
                "max_m": self.max_momentum,
                "base_m": self.base_momentum,
            }
            start_step = 0.0
            for j, (end_step, lr0, lr1, m0, m1) in enumerate(self.phases):
                if step <= end_step or j == len(self.phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(values[lr0], values[lr1], pct))
                    momentum = self._anneal(values[m0], values[m1], pct)
                    break
                start_step = end_step
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


class SequentialLR(LRScheduler):
    """Runs ``schedulers`` one after the other, switching at each epoch in ``milestones``; each
    scheduler restarts from its own step 0 when it takes over."""

    def __init__(self, optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int]):
        _check_optimizer("SequentialLR", optimizer)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: expected {len(schedulers) - 1} milestone(s) for "
                f"{len(schedulers)} schedulers, got {len(milestones)}"
            )
        for s in schedulers:
            if s.optimizer is not optimizer:
                raise ValueError(
                    f"SequentialLR: expected schedulers of the given optimizer, got "
                    f"{type(s).__name__} of another one"
                )
        self.optimizer = optimizer
        self.schedulers = list(schedulers)
        self.milestones = list(milestones)
        self.last_epoch = 0
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.schedulers[0].step(0)
        self._last_lr = self.schedulers[0].get_last_lr()

    def step(self) -> None:  # type: ignore[override]
        self.last_epoch += 1
        i = bisect.bisect_right(self.milestones, self.last_epoch)
        scheduler = self.schedulers[i]
        if i > 0 and self.milestones[i - 1] == self.last_epoch:
            scheduler.step(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = {k: v for k, v in vars(self).items() if k not in ("optimizer", "schedulers")}
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def check_state_dict(self, state_dict) -> dict:
        who = "SequentialLR.load_state_dict"
        n = len(self.schedulers)
        spec = S.Record({"schedulers": S.ListOf(S.Any(), min_len=n, max_len=n)}, extra=True)
        subs = S.validate(spec, state_dict, who)["schedulers"]
        own = {k: v for k, v in state_dict.items() if k != "schedulers"}
        template = {k: v for k, v in self.state_dict().items() if k != "schedulers"}
        checked = S.validate(S.like(template, finite=True, same_strings=True), own, who)
        checked["schedulers"] = [s.check_state_dict(sd) for s, sd in zip(self.schedulers, subs)]
        return checked

    def apply_state_dict(self, checked: dict) -> None:
        checked = dict(checked)
        for s, sd in zip(self.schedulers, checked.pop("schedulers")):
            s.apply_state_dict(sd)
        self.__dict__.update(checked)


class ReduceLROnPlateau(_SavedState):
    """Multiplies the rate by ``factor`` when a monitored value stops improving for more than
    ``patience`` epochs: call ``step(value)`` after each validation.

    Args:
        mode: 'min' (a loss) or 'max' (an accuracy).
        factor: the multiplier (< 1).
        patience: epochs without improvement tolerated before reducing.
        threshold, threshold_mode: an improvement must beat the best by this much, relatively
            ('rel': ``best * (1 - threshold)`` in min mode) or absolutely ('abs').
        cooldown: epochs to wait after a reduction before counting bad epochs again.
        min_lr: the floor (one value, or one per group).
        eps: reductions smaller than this are skipped.
    """

    def __init__(
        self,
        optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ):
        who = "ReduceLROnPlateau"
        _check_optimizer(who, optimizer)
        check_hyper(who, "factor", factor, 0 <= factor < 1, "must be in [0, 1)")
        check_hyper(who, "mode", mode, mode in ("min", "max"), "must be 'min' or 'max'")
        check_hyper(
            who, "threshold_mode", threshold_mode, threshold_mode in ("rel", "abs"),
            "must be 'rel' or 'abs'",
        )  # fmt: skip
        check_hyper(who, "patience", patience, patience >= 0, "must be >= 0")
        n = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n
        if len(self.min_lrs) != n:
            raise ValueError(f"{who}: expected {n} min_lr value(s), got {len(self.min_lrs)}")
        check_lrs(f"{who}: min_lr", self.min_lrs)
        self.optimizer = optimizer
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def is_better(self, value: float, best: float) -> bool:
        if self.mode == "min":
            limit = (
                best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else best - self.threshold
            )
            return value < limit
        limit = (
            best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        )
        return value > limit

    def step(self, metrics: float) -> None:
        """Records one epoch's monitored value and reduces the rate if it has plateaued."""
        value = float(metrics)
        self.last_epoch += 1
        if self.is_better(value, self.best):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(group["lr"] * self.factor, floor)  # both checked finite and >= 0
                if group["lr"] - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    _finite_state = False  # best starts at +-inf

    def check_state_dict(self, state_dict) -> dict:
        checked = super().check_state_dict(state_dict)
        who = "ReduceLROnPlateau.load_state_dict"
        rules = (
            ("factor", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("threshold", math.isfinite, "finite"),
            ("eps", math.isfinite, "finite"),
            ("patience", lambda v: v >= 0, ">= 0"),
            ("cooldown", lambda v: v >= 0, ">= 0"),
            ("num_bad_epochs", lambda v: v >= 0, ">= 0"),
            ("cooldown_counter", lambda v: v >= 0, ">= 0"),
        )
        for key, ok, rule in rules:
            if key in checked and not ok(checked[key]):
                raise S.SchemaError(f"{who}: {key}: expected a value {rule}, got {checked[key]!r}")
        return checked

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
            f"patience={self.patience}, lr={self._last_lr})"
        )
