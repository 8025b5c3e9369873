"""Mini-batch Adam training of a flow, with early stopping, divergence handling and
interrupt safety."""

import contextlib
import copy
import math
import signal
import threading
import warnings
from dataclasses import dataclass, field

import torch
from sklearn.exceptions import ConvergenceWarning

from ._objective import log_likelihood, penalized_nll
from ..exceptions import TrainingDivergedWarning
from .._progress import EpochReporter

# Adaptive schedule: divide the learning rate by this factor on a plateau, and stop once it
# falls below the floor (scikit-learn's MLP uses the same rule).
_LR_DECAY = 5.0
_LR_FLOOR = 1e-6

# Cosine schedule: a linear warm-up over this fraction of all steps, from this fraction of
# the initial rate, then a half cosine down to zero at the last step of max_iter epochs
# (the shape of PyTorch's OneCycleLR with a short warm-up).
_WARMUP_FRACTION = 0.05
_WARMUP_START = 0.1

LEARNING_RATE_SCHEDULES = ("adaptive", "constant", "cosine")


def cosine_learning_rate(step, n_steps, learning_rate_init):
    """Learning rate of the 'cosine' schedule at ``step`` (0-based) of ``n_steps``.

    Parameters
    ----------
    step, n_steps : int
    learning_rate_init : float
        The peak rate, reached at the end of the warm-up.

    Returns
    -------
    float

    Examples
    --------
    >>> from flowpca.density._training import cosine_learning_rate
    >>> [round(cosine_learning_rate(s, 100, 1.0), 3) for s in (0, 5, 50, 99)]
    [0.1, 1.0, 0.533, 0.0]
    """
    warmup = max(1, int(round(_WARMUP_FRACTION * n_steps)))
    if step < warmup:
        return learning_rate_init * (_WARMUP_START + (1 - _WARMUP_START) * step / warmup)
    progress = (step - warmup) / max(1, n_steps - 1 - warmup)
    return learning_rate_init * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainingResult:
    """What :func:`train_flow` reports besides the (modified in place) flow."""
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    diverged: bool = False
    interrupted: bool = False


@dataclass
class TrainingOptions:
    """Knobs of :func:`train_flow`; names follow scikit-learn's MLP estimators."""
    alpha: float
    penalty: str = "exact"
    n_probes: int = 1
    max_iter: int = 200
    batch_size: int = 200
    learning_rate_init: float = 1e-3
    learning_rate: str = "adaptive"
    tol: float = 1e-4
    n_iter_no_change: int = 10
    max_grad_norm: float = 10.0
    verbose: int = 0


class _InterruptFlag:
    """Turns the first SIGINT into a flag checked between steps; a second one aborts."""

    def __init__(self):
        self.raised = False

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _all_finite(module):
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _snapshot(module):
    # Tensors are cloned directly: deepcopy of the state dict cost 13 % of an epoch on
    # tiny data sets (one step per epoch), where every epoch takes a snapshot.
    return {name: value.detach().clone() if isinstance(value, torch.Tensor)
            else copy.deepcopy(value) for name, value in module.state_dict().items()}


@torch.no_grad()
def _mean_log_likelihood(flow, x, batch_size):
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        total += log_likelihood(flow, x[start:start + batch_size]).sum().item()
    return total / x.shape[0]


def train_flow(flow, x_train, options, generator, x_val=None):
    """Fit ``flow`` in place by minimizing :func:`penalized_nll` with Adam.

    Parameters
    ----------
    flow : Flow
    x_train : torch.Tensor of shape (n, D)
        Centered training data, already on the flow's device and dtype.
    options : TrainingOptions
    generator : torch.Generator
        Source of batch order and Hutchinson probes.
    x_val : torch.Tensor, optional
        Held-out data: when given, convergence and the kept weights follow its mean
        log-likelihood (early stopping) instead of the training loss.

    Returns
    -------
    TrainingResult
    """
    result = TrainingResult()
    optimizer = torch.optim.Adam(flow.parameters(), lr=options.learning_rate_init)
    n_samples = x_train.shape[0]
    batch_size = min(options.batch_size, n_samples)
    early_stopping = x_val is not None
    cosine = options.learning_rate == "cosine"
    n_steps = options.max_iter * math.ceil(n_samples / batch_size)
    step = 0

    last_good_state = _snapshot(flow)
    best_state = last_good_state
    best_loss, best_score = math.inf, -math.inf
    epochs_no_improvement = 0
    interrupt = _InterruptFlag()

    with interrupt.installed(), EpochReporter(options.max_iter, options.verbose) as report:
        for epoch in range(options.max_iter):
            order = torch.randperm(n_samples, generator=generator, device=generator.device)
            order = order.to(x_train.device)
            # The epoch's loss stays on the device: one host synchronization per step
            # (the finiteness check of the loss and the gradient together), not three.
            epoch_loss, failure = torch.zeros((), dtype=x_train.dtype,
                                              device=x_train.device), None
            for start in range(0, n_samples, batch_size):
                if cosine:
                    for group in optimizer.param_groups:
                        group["lr"] = cosine_learning_rate(step, n_steps,
                                                           options.learning_rate_init)
                step += 1
                batch = x_train[order[start:start + batch_size]]
                optimizer.zero_grad(set_to_none=True)
                loss = penalized_nll(flow, batch, options.alpha, options.penalty,
                                     options.n_probes, generator)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(flow.parameters(),
                                                           options.max_grad_norm)
                if not bool(torch.isfinite(loss + grad_norm)):
                    failure = ("non-finite loss" if not torch.isfinite(loss)
                               else "non-finite gradient")
                    break
                optimizer.step()
                epoch_loss += loss.detach() * batch.shape[0]
                if interrupt.raised:
                    break
            if failure is None and not _all_finite(flow):
                failure = "non-finite parameters"
            if failure is not None:
                flow.load_state_dict(last_good_state)
                result.diverged = True
                warnings.warn(
                    f"Training diverged at epoch {epoch + 1} ({failure}); the weights of "
                    f"epoch {epoch} were restored. Try a larger alpha or a smaller "
                    "learning_rate_init.", TrainingDivergedWarning, stacklevel=3)
                break
            if interrupt.raised:
                flow.load_state_dict(best_state if early_stopping else _snapshot(flow))
                result.interrupted = True
                warnings.warn(f"Training interrupted during epoch {epoch + 1}; keeping the "
                              "best weights seen so far.", UserWarning, stacklevel=3)
                break

            epoch_loss = epoch_loss.item() / n_samples
            result.loss_curve.append(epoch_loss)
            result.n_iter = epoch + 1
            last_good_state = _snapshot(flow)

            if early_stopping:
                score = _mean_log_likelihood(flow, x_val, max(batch_size, 1024))
                result.validation_scores.append(score)
                improved = score > best_score + options.tol
                if score > best_score:
                    best_score, best_state = score, last_good_state
            else:
                improved = epoch_loss < best_loss - options.tol
                best_loss = min(best_loss, epoch_loss)

            report.epoch(epoch + 1, epoch_loss, score if early_stopping else None)

            epochs_no_improvement = 0 if improved else epochs_no_improvement + 1
            if epochs_no_improvement > options.n_iter_no_change:
                lr = optimizer.param_groups[0]["lr"]
                # 'cosine' anneals by the step count; a plateau ends it (as 'constant').
                if options.learning_rate == "adaptive" and lr / _LR_DECAY >= _LR_FLOOR:
                    for group in optimizer.param_groups:
                        group["lr"] = lr / _LR_DECAY
                    epochs_no_improvement = 0
                    report.message(f"Setting learning rate to {lr / _LR_DECAY:.6g}")
                else:
                    result.converged = True
                    break

    if early_stopping and not result.diverged:
        flow.load_state_dict(best_state)
    if cosine and result.n_iter == options.max_iter:
        # The schedule annealed to zero: training ended where it was planned to.
        result.converged = True
    if not (result.converged or result.diverged or result.interrupted):
        warnings.warn(f"Stochastic optimizer: maximum iterations ({options.max_iter}) "
                      "reached and the optimization hasn't converged yet.",
                      ConvergenceWarning, stacklevel=3)
    return result
