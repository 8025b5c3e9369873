"""The 'auto' defaults: each resolves as documented, the training they choose (annealed
schedule, float32 on CPU, alpha by held-out likelihood), and the claim they are for: the
default estimator is a better density than scikit-learn's best-BIC Gaussian mixture."""

import math
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from sklearn.datasets import make_swiss_roll
from sklearn.mixture import GaussianMixture

import flowpca.density._fitting
from flowpca import NormalizingFlowPCA
from flowpca.density._training import cosine_learning_rate
from flowpca.datasets import make_s_curve_gaussian
from flowpca.exceptions import AmbiguousInverseWarning
from flowpca.flows._families import AUTO_PARAMETERS, FAMILY_DEFAULTS, resolve_defaults

from .conftest import anisotropic_gaussian

X_SMALL = anisotropic_gaussian(120, 2, seed=0)


def _quiet_fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X)


def test_default_family_is_nsf_with_its_auto_values():
    model = _quiet_fit(NormalizingFlowPCA(max_iter=3, random_state=0), X_SMALL)
    n_train = 120 - round(0.1 * 120)  # early stopping holds out a tenth
    assert model.get_params()["flow"] == "nsf"
    assert (model.n_layers_, model.learning_rate_, model.early_stopping_,
            model.penalty_estimator_, model.n_iter_no_change_) == (
        3, "cosine", True, "hutchinson", 50)
    assert model.learning_rate_init_ == 1e-2
    assert model.batch_size_ == max(64, math.ceil(n_train / 4))
    assert model.max_iter_ == 3  # given values are kept
    # alpha='auto': the best held-out candidate of (0, 1e-3 x mean feature variance).
    candidates = [alpha for alpha, _ in model.alpha_scores_]
    assert candidates[0] == 0.0 and len(candidates) == 2
    assert model.alpha_ == max(model.alpha_scores_, key=lambda pair: pair[1])[0]
    assert model.validation_scores_ is not None and model.n_iter_ <= 3


def test_paper_families_keep_their_settings():
    model = _quiet_fit(NormalizingFlowPCA(flow="mlp", n_layers=1, max_iter=2,
                                          random_state=0), X_SMALL)
    assert (model.n_layers_, model.max_iter_, model.batch_size_, model.learning_rate_init_,
            model.learning_rate_, model.early_stopping_, model.alpha_,
            model.n_iter_no_change_) == (1, 2, 200, 3e-2, "adaptive", False, 5e-5, 40)
    assert model.alpha_scores_ is None and model.validation_scores_ is None
    linear = NormalizingFlowPCA(flow="linear").fit(X_SMALL)
    assert linear.alpha_ == 5e-5 and linear.early_stopping_ is False


@pytest.mark.parametrize("flow, max_grad_norm", [("nsf", math.inf), ("mlp", 10.0)])
def test_gradient_clip_of_the_table_reaches_the_training_loop(flow, max_grad_norm):
    # zuko's flows train unclipped (clipping held the noise-free sine back), the paper's
    # model with its norm of 10.
    seen = []
    train_flow = flowpca.density._fitting.train_flow

    def recording(flow_, x, options, *args, **kwargs):
        seen.append(options.max_grad_norm)
        return train_flow(flow_, x, options, *args, **kwargs)

    with mock.patch.object(flowpca.density._fitting, "train_flow", recording):
        _quiet_fit(NormalizingFlowPCA(flow=flow, n_layers=1, max_iter=2, random_state=0),
                   X_SMALL)
    assert seen and set(seen) == {max_grad_norm}


@pytest.mark.parametrize("n_samples, batch_size, max_iter", [
    (50, 64, 250), (900, 225, 250), (1800, 450, 250), (20_000, 512, 50), (4_000, 512, 125)])
def test_zuko_batch_size_and_epochs_scale_with_the_data(n_samples, batch_size, max_iter):
    given = dict.fromkeys(AUTO_PARAMETERS, "auto")
    resolved = resolve_defaults(FAMILY_DEFAULTS["nsf"], given, n_samples, 3)
    assert (resolved["batch_size"], resolved["max_iter"]) == (batch_size, max_iter)
    # About 1 000 optimizer steps wherever the epoch bounds allow.
    steps = resolved["max_iter"] * math.ceil(n_samples / resolved["batch_size"])
    assert steps >= 1000 or resolved["max_iter"] == 250


def test_explicit_values_override_the_table():
    model = _quiet_fit(NormalizingFlowPCA(
        n_layers=1, max_iter=2, batch_size=30, learning_rate_init=1e-2,
        learning_rate="adaptive", early_stopping=False, alpha=1e-3, n_iter_no_change=5,
        penalty_estimator="exact", flow_params={"hidden_features": (8,)},
        random_state=0), X_SMALL)
    assert (model.n_layers_, model.max_iter_, model.batch_size_, model.learning_rate_init_,
            model.learning_rate_, model.early_stopping_, model.alpha_,
            model.n_iter_no_change_, model.penalty_estimator_) == (
        1, 2, 30, 1e-2, "adaptive", False, 1e-3, 5, "exact")
    assert model.alpha_scores_ is None


def test_cosine_schedule_warms_up_then_anneals_to_zero():
    rates = [cosine_learning_rate(step, 200, 2.0) for step in range(200)]
    peak = int(np.argmax(rates))
    assert rates[0] == pytest.approx(0.2) and rates[peak] == pytest.approx(2.0)
    assert np.all(np.diff(rates[:peak + 1]) > 0) and np.all(np.diff(rates[peak:]) <= 0)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_zuko_trains_in_float32_and_returns_a_float64_model():
    seen = []
    train = flowpca.density._fitting.train_flow

    def spy(flow, x_train, *args, **kwargs):
        seen.append((x_train.dtype, next(flow.parameters()).dtype))
        return train(flow, x_train, *args, **kwargs)

    with mock.patch.object(flowpca.density._fitting, "train_flow", side_effect=spy):
        model = _quiet_fit(NormalizingFlowPCA(max_iter=2, alpha=0.0, random_state=0),
                           X_SMALL)
        explicit = _quiet_fit(NormalizingFlowPCA(max_iter=2, alpha=0.0, dtype="float64",
                                                 random_state=0), X_SMALL)
    assert seen == [(torch.float32, torch.float32), (torch.float64, torch.float64)]
    for fitted in (model, explicit):
        assert all(p.dtype == torch.float64 for p in fitted.flow_.parameters())
        assert fitted.score_samples(X_SMALL).dtype == np.float64
    # The float32-trained model is a float64 model of nearly the same weights.
    assert abs(model.score(X_SMALL) - explicit.score(X_SMALL)) < 1e-3


def test_alpha_auto_without_held_out_data_keeps_the_first_candidate():
    model = _quiet_fit(NormalizingFlowPCA(max_iter=2, early_stopping=False,
                                          random_state=0), X_SMALL)
    assert model.alpha_ == 0.0 and model.alpha_scores_ is None


def test_auto_fits_are_deterministic():
    first = _quiet_fit(NormalizingFlowPCA(max_iter=4, random_state=3), X_SMALL)
    second = _quiet_fit(NormalizingFlowPCA(max_iter=4, random_state=3), X_SMALL)
    np.testing.assert_array_equal(first.score_samples(X_SMALL),
                                  second.score_samples(X_SMALL))
    assert first.alpha_scores_ == second.alpha_scores_


def test_models_saved_before_the_auto_parameters_load():
    model = _quiet_fit(NormalizingFlowPCA(flow="mlp", n_layers=1, max_iter=2,
                                          random_state=0), X_SMALL)
    state = model.__getstate__()
    for name in AUTO_PARAMETERS:  # what an older version stored
        del state[f"{name}_"]
    del state["alpha_scores_"]
    state.update(n_layers=1, max_iter=2, batch_size=200, learning_rate_init=3e-2,
                 learning_rate="adaptive", early_stopping=False, alpha=5e-5,
                 n_iter_no_change=40)
    old = NormalizingFlowPCA.__new__(NormalizingFlowPCA)
    old.__setstate__(state)
    assert old.alpha_ == 5e-5 and old.n_layers_ == 1 and old.alpha_scores_ is None
    np.testing.assert_array_equal(old.transform(X_SMALL), model.transform(X_SMALL))


def test_inverse_transform_counts_points_with_another_preimage():
    # A component map with two preimages for every value, c(x) = x^2 - 1 on the line:
    # the solver must return the preimage in the chart of the nearest reference point
    # and count every point in the warning.
    X = np.linspace(-2, 2, 81)[:, None]
    model = _quiet_fit(NormalizingFlowPCA(max_iter=2, random_state=0), X)
    component_map = model._component_map
    reference = torch.as_tensor(component_map.reference_points)
    component_map.reference_point_components = (reference ** 2 - 1).numpy()

    def folded(flow, x, full=False):
        directions = torch.where(x >= 0, 1.0, -1.0).to(x).unsqueeze(-1)
        return torch.ones_like(x), directions, x ** 2 - 1

    component_map.oriented_components = folded
    targets = np.array([[0.0], [3.0], [-0.75]])  # preimages +-1, +-2, +-0.5
    with pytest.warns(AmbiguousInverseWarning, match="3 of 3 points"):
        X_back, residuals = model.inverse_transform(targets, return_residuals=True)
    np.testing.assert_allclose(np.abs(X_back - model.mean_).ravel(), [1.0, 2.0, 0.5],
                               atol=1e-6)
    assert residuals.shape == (3,) and np.all(residuals <= model.inverse_tol)


def test_return_residuals_of_exact_inverses_are_zero():
    linear = NormalizingFlowPCA(1, flow="linear").fit(X_SMALL)
    X_back, residuals = linear.inverse_transform(linear.transform(X_SMALL),
                                                 return_residuals=True)
    np.testing.assert_allclose(X_back, linear.inverse_transform(linear.transform(X_SMALL)))
    np.testing.assert_array_equal(residuals, np.zeros(len(X_SMALL)))


def _best_bic_mixture(X_train, seed):
    mixtures = [GaussianMixture(k, random_state=seed).fit(X_train) for k in (1, 2, 4, 8, 16)]
    return min(mixtures, key=lambda mixture: mixture.bic(X_train))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swiss_roll_noisy", "paper_s_curve"])
def test_default_estimator_beats_the_best_bic_mixture(name):
    # 1 000 training and 1 000 test points, seed 0. Measured (benchmarks/defaults.py
    # has the 2 000-point, 3-seed table): swiss roll / 5 with noise 0.1 and the paper's
    # S-curve, where the default's margin over the mixture is largest.
    if name == "swiss_roll_noisy":
        X = make_swiss_roll(2000, noise=0.1, random_state=0)[0] / 5
    else:
        X = make_s_curve_gaussian(2000, random_state=0)[0]
    X_train, X_test = X[:1000], X[1000:]
    model = _quiet_fit(NormalizingFlowPCA(random_state=0), X_train)
    assert model.score(X_test) > _best_bic_mixture(X_train, 0).score(X_test)
