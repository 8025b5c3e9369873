"""The training loop: convergence bookkeeping, early stopping, divergence, interrupts."""

import signal

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from flowpca import NormalizingFlowPCA
from flowpca.exceptions import TrainingDivergedWarning
from flowpca.flows import LinearFlow

from .conftest import anisotropic_gaussian

X = anisotropic_gaussian(300, 3, seed=0)


class SabotagedFlow(LinearFlow):
    """A linear flow that misbehaves on its ``trigger``-th training forward pass."""

    def __init__(self, n_features, weight=None, trigger=10, action="nan"):
        super().__init__(n_features, weight)
        self.trigger, self.action, self.calls = trigger, action, 0

    def forward(self, x):
        y, log_abs_det = super().forward(x)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.trigger:
                if self.action == "nan":
                    return y * float("nan"), log_abs_det
                if self.action == "raise":
                    raise RuntimeError("boom")
                if self.action == "sigint":
                    # raise_signal delivers to this (the main) thread before returning;
                    # os.kill may hand it to another thread of the process.
                    signal.raise_signal(signal.SIGINT)
        return y, log_abs_det


def _adam(**params):
    defaults = dict(solver="adam", batch_size=100, learning_rate_init=1e-2, random_state=0)
    return NormalizingFlowPCA(**{**defaults, **params})


def test_loss_curve_and_convergence_warning():
    with pytest.warns(ConvergenceWarning, match="maximum iterations \\(5\\)"):
        model = _adam(flow="linear", max_iter=5).fit(X)
    assert model.n_iter_ == 5 == len(model.loss_curve_)
    assert model.validation_scores_ is None
    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_early_stopping_tracks_and_keeps_best_validation_score():
    model = _adam(flow="linear", early_stopping=True, validation_fraction=0.2,
                  max_iter=400, n_iter_no_change=5).fit(X)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ == len(model.loss_curve_) < 400
    # The kept weights are those of the best epoch: scoring the same held-out rows again
    # reproduces the best score.
    rng = np.random.RandomState(0)
    rng.randint(np.iinfo(np.int32).max)  # the seed drawn for torch comes first
    held_out = X[rng.permutation(len(X))[:60]]
    assert model.score(held_out) == pytest.approx(max(scores), abs=1e-10)


def test_verbose_prints_epoch_lines(capsys):
    _adam(flow="linear", max_iter=3, verbose=1, early_stopping=True).fit(X)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Epoch 1, loss = ")
    assert "validation log-likelihood" in lines[0]
    assert len([line for line in lines if line.startswith("Epoch")]) == 3


def test_divergence_restores_last_good_weights_and_warns():
    flow = SabotagedFlow(3, trigger=10, action="nan")
    with pytest.warns(TrainingDivergedWarning, match="epoch 4 \\(non-finite loss\\)"):
        model = _adam(flow=flow, max_iter=50).fit(X)
    assert model.n_iter_ == 3  # three clean epochs of three batches each
    assert np.all(np.isfinite(model.score_samples(X)))


def test_model_non_finite_on_training_data_is_never_returned():
    flow = SabotagedFlow(3, weight=torch.zeros(3, 3, dtype=torch.float64), trigger=-1)
    model = NormalizingFlowPCA(flow="linear").fit(X)
    before = model.score_samples(X)
    with pytest.warns(TrainingDivergedWarning), \
            pytest.raises(FloatingPointError, match="non-finite log-likelihoods"):
        model.set_params(flow=flow, solver="adam").fit(X)
    np.testing.assert_array_equal(model.score_samples(X), before)


def test_exception_inside_training_leaves_fitted_model_untouched():
    model = _adam(flow="linear", max_iter=20).fit(X)
    before = {k: v for k, v in vars(model).items() if k.endswith("_")}
    transformed = model.transform(X)
    with pytest.raises(RuntimeError, match="boom"):
        model.set_params(flow=SabotagedFlow(3, trigger=5, action="raise")).fit(X)
    assert {k: v for k, v in vars(model).items() if k.endswith("_")} == before
    np.testing.assert_array_equal(model.transform(X), transformed)


def test_interrupt_stops_at_end_of_step_and_returns_usable_model():
    # The handler in place before the fit is restored after it: Python's default one, or
    # SIG_IGN where the test process was started in the background by a shell without
    # job control (it then inherits an ignored SIGINT).
    handler_before = signal.getsignal(signal.SIGINT)
    flow = SabotagedFlow(3, trigger=7, action="sigint")
    with pytest.warns(UserWarning, match="interrupted during epoch 3"):
        model = _adam(flow=flow, max_iter=100).fit(X)
    assert model.n_iter_ == 2 < 100
    assert np.isfinite(model.score(X))
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_gradient_clipping_keeps_steps_bounded():
    """A badly scaled start (huge data) would blow up without clipping; with it, Adam's
    first steps stay finite and the loss decreases."""
    model = _adam(flow="linear", max_iter=20).fit(X * 1e4)
    assert np.all(np.isfinite(model.loss_curve_))
