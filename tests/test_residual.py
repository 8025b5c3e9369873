"""Invertible residual flow (flow='residual'): exact and estimated log-determinants,
the Lipschitz bound, inversion, and the estimator around it."""

import pickle
import warnings

import numpy as np
import pytest
import skops.io as sio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import trapezoid
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from flowpca import NormalizingFlowPCA
from flowpca.density import penalized_nll
from flowpca.datasets import make_banana, make_s_curve_gaussian, make_sine_wave
from flowpca.flows import ResidualFlow
from flowpca.flows._families import FlowSettings, build_flow

from ._flow_checks import assert_contract_matches_jacobian, penalized_nll_from_jacobian

# Small g's and few blocks keep the estimator tests fast.
SMALL = {"hidden_features": (8,)}


def generator(seed):
    return torch.Generator().manual_seed(seed)


def random_flow(n_features, n_layers=3, seed=0, gain=4.0, **kwargs):
    """An evaluation-mode flow whose g's sit at their Lipschitz bound (weights scaled up
    by ``gain`` before normalization), so that the blocks are far from the identity."""
    X = torch.randn(200, n_features, generator=generator(seed), dtype=torch.float64)
    flow = ResidualFlow.from_data(X, 1e-3, generator=generator(seed + 1), n_layers=n_layers,
                                  output_scale=1.0, **kwargs)
    with torch.no_grad():
        for g in flow.blocks:
            for weight in g.weights:
                weight.mul_(gain)
            g.finalize()
    return flow.eval()


def random_x(n_samples, n_features, seed=1):
    return 1.5 * torch.randn(n_samples, n_features, generator=generator(seed),
                             dtype=torch.float64)


def autograd_jacobian(flow, x):
    def single(row):
        return flow.forward(row.unsqueeze(0))[0].squeeze(0)
    return torch.func.vmap(torch.func.jacrev(single))(x)


# ---------------------------------------------------------------- the flow
@settings(max_examples=10, deadline=None)
@given(n_features=st.integers(1, 6), n_layers=st.integers(0, 3), seed=st.integers(0, 99),
       activation=st.sampled_from(["lipswish", "elu"]))
def test_exact_log_det_and_jacobian_match_autograd(n_features, n_layers, seed, activation):
    flow = random_flow(n_features, n_layers, seed, activation=activation)
    x = random_x(7, n_features, seed)
    J = autograd_jacobian(flow, x)
    v = random_x(7, n_features, seed + 2)
    V = random_x(7, 2 * n_features, seed + 3).reshape(7, 2, n_features)
    assert_contract_matches_jacobian(flow, x, J, v, V, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_tikhonov_penalty_is_that_of_the_mlp_flow(alpha):
    # The training objective is the MLP flow's: the mean of ||f(x)||^2 / 2 -
    # log|det J_f(x)| + alpha / 2 ||J_f(x)||_F^2, with J_f the autograd Jacobian.
    flow = random_flow(3, n_layers=2, seed=11)
    x = random_x(6, 3)
    J = autograd_jacobian(flow, x)
    expected = penalized_nll_from_jacobian(flow, x, J, alpha)
    torch.testing.assert_close(penalized_nll(flow, x, alpha), expected, rtol=0, atol=1e-10)


def test_power_series_log_det_is_unbiased():
    # One call estimates every row with one number of terms and independent probes, so
    # the means of the calls over 50 copies of each point are i.i.d.: their mean over
    # 200 calls lies within 5 standard errors of the exact value at each of the 4 points
    # (a false alarm has probability below 3e-6).
    n_features, n_copies, n_calls = 5, 50, 200
    flow = random_flow(n_features, n_layers=2, seed=3, gain=4.0)
    x = random_x(4, n_features, seed=4)
    exact = flow(x)[1]
    flow.eval_exact_logdet_max_features = 0  # use the estimator in evaluation mode
    gen = generator(5)
    with torch.no_grad():
        draws = torch.stack([flow(x.repeat(n_copies, 1), generator=gen)[1].reshape(
            n_copies, 4).mean(dim=0) for _ in range(n_calls)])
    standard_error = draws.std(dim=0) / n_calls ** 0.5
    assert (standard_error > 0).all()
    z = (draws.mean(dim=0) - exact).abs() / standard_error
    assert (z < 5).all(), z


def test_power_series_gradient_is_unbiased():
    # The Neumann-series gradient of the estimate with respect to the input, averaged
    # like the values above, matches the exact gradient of log|det J_f| (same rule).
    n_features, n_copies, n_calls = 3, 50, 100
    flow = random_flow(n_features, n_layers=1, seed=6, gain=4.0)
    x = random_x(2, n_features, seed=7)
    exact = torch.func.jacrev(lambda r: flow(r)[1].sum())(x).ravel()
    flow.eval_exact_logdet_max_features = 0
    gen = generator(8)
    draws = []
    for _ in range(n_calls):
        xr = x.repeat(n_copies, 1).requires_grad_(True)
        grad = torch.autograd.grad(flow(xr, generator=gen)[1].sum(), xr)[0]
        draws.append(grad.reshape(n_copies, -1).mean(dim=0))
    draws = torch.stack(draws)
    z = (draws.mean(dim=0) - exact).abs() / (draws.std(dim=0) / n_calls ** 0.5)
    assert (z < 5).all(), z


def test_scores_are_deterministic_with_the_estimator():
    flow = random_flow(4, n_layers=2, seed=9, eval_exact_logdet_max_features=0)
    x = random_x(6, 4)
    torch.testing.assert_close(flow(x)[1], flow(x)[1], rtol=0, atol=0)


@settings(max_examples=8, deadline=None)
@given(n_features=st.integers(1, 5), seed=st.integers(0, 99))
def test_inverse_round_trip(n_features, seed):
    flow = random_flow(n_features, n_layers=3, seed=seed)
    x = random_x(20, n_features, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        x_back = flow.inverse(flow(x)[0])
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-6)


def test_inverse_warns_when_the_iteration_cap_is_hit():
    flow = random_flow(3, n_layers=2, seed=0, inverse_max_iter=1)
    y = flow(random_x(5, 3))[0]
    with pytest.warns(ConvergenceWarning, match="did not converge for 5 of 5 rows"):
        flow.inverse(y)


def test_lipschitz_bound_and_finalize():
    flow = random_flow(4, n_layers=2, seed=1, lipschitz=0.7, gain=10.0)
    for g in flow.blocks:
        # Spectral norms of the normalized layers, and the raw weights after finalize.
        assert max(g.spectral_norms()) <= 0.7 + 1e-6
        assert max(float(torch.linalg.matrix_norm(w.detach(), ord=2))
                   for w in g.weights) <= 0.7 + 1e-6


def test_power_vectors_are_buffers_and_persist():
    flow = random_flow(3, n_layers=1, seed=2)
    names = [name for name, _ in flow.named_buffers()]
    assert "blocks.0.left_0" in names and "blocks.0.right_1" in names
    rebuilt = ResidualFlow(**flow.get_config())
    rebuilt.load_state_dict(flow.state_dict())
    x = random_x(5, 3)
    torch.testing.assert_close(rebuilt.eval()(x)[0], flow(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("flow_params, match", [
    ({"lipschitz": 1.0}, "lipschitz"),
    ({"lipschitz": 0}, "lipschitz"),
    ({"hidden_features": (8, 0)}, "hidden_features"),
    ({"activation": "relu"}, "activation"),
    ({"inverse_max_iter": 0}, "inverse_max_iter"),
    ({"geometric_p": 0.0}, "geometric_p"),
    ({"width": 3}, "does not accept"),
])
def test_bad_flow_params_are_rejected(flow_params, match):
    X = random_x(50, 3)
    with pytest.raises(ValueError, match=match):
        build_flow("residual", X, FlowSettings(1e-3, 2, flow_params=flow_params,
                                               generator=generator(0)))
    model = NormalizingFlowPCA(flow="residual", flow_params=flow_params)
    with pytest.raises(ValueError, match=match):
        model.fit(X.numpy())
    assert not hasattr(model, "flow_")


# ---------------------------------------------------------------- the estimator
@parametrize_with_checks([NormalizingFlowPCA(flow="residual", n_layers=1, max_iter=3,
                                             flow_params=SMALL)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _fit(X, **kwargs):
    params = dict(flow="residual", n_layers=2, max_iter=10, flow_params=SMALL,
                  random_state=0)
    params.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return NormalizingFlowPCA(**params).fit(X)


@pytest.fixture(scope="module")
def fitted():
    X, _ = make_sine_wave(300, random_state=0)
    return _fit(X, n_components=2), X


def test_fitted_layers_satisfy_the_lipschitz_bound(fitted):
    model, _ = fitted
    assert not model.flow_.training
    for g in model.flow_.blocks:
        assert max(g.spectral_norms()) <= 0.9 + 1e-6


def test_estimator_methods_work(fitted):
    model, X = fitted
    Z = model.transform(X[:20])
    assert Z.shape == (20, 2) and np.isfinite(Z).all()
    full = _fit(X, n_components=None)
    X_back = full.inverse_transform(full.transform(X[:10]))
    np.testing.assert_allclose(X_back, X[:10], atol=1e-6)
    assert model.local_variances(X[:5]).shape == (5, 3)
    assert model.local_directions(X[:5]).shape == (5, 3, 2)
    covariance = model.local_covariance(X[:5])
    np.testing.assert_allclose(covariance, covariance.transpose(0, 2, 1), atol=1e-10)
    samples = model.sample(50, random_state=0)
    assert samples.shape == (50, 3) and np.isfinite(samples).all()
    np.testing.assert_array_equal(samples, model.sample(50, random_state=0))


def test_pickle_and_skops_round_trips(fitted, tmp_path):
    model, X = fitted
    for loaded in (pickle.loads(pickle.dumps(model)),
                   sio.loads(sio.dumps(model), trusted=sio.get_untrusted_types(
                       data=sio.dumps(model)))):
        np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
        np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


def test_density_integrates_to_one_in_2d():
    X, _ = make_banana(600, random_state=0)
    model = _fit(X, n_layers=3, max_iter=30, flow_params={"hidden_features": (16,)})
    # The flow is bi-Lipschitz (an affine map and blocks with Lip(g) < 1), so its density
    # has Gaussian tails: a box of 12 data standard deviations holds all the mass.
    half_width = 12 * X.std(axis=0)
    axes = [np.linspace(model.mean_[i] - half_width[i], model.mean_[i] + half_width[i], 401)
            for i in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(model.score_samples(grid)).reshape(401, 401)
    mass = trapezoid(trapezoid(density, axes[1], axis=1), axes[0])
    assert mass == pytest.approx(1.0, abs=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("make", [make_sine_wave, make_s_curve_gaussian])
def test_beats_the_linear_flow_and_recovers_the_latent_factors(make):
    X, latent = make(2000, random_state=0)
    X_train, X_test, latent_test = X[:1000], X[1000:], latent[1000:]
    linear = NormalizingFlowPCA(flow="linear").fit(X_train).score(X_test)
    model = _fit(X_train, n_components=2, n_layers=8, max_iter=100, flow_params=None)
    assert model.score(X_test) > linear + 0.5
    Z = model.transform(X_test)
    for i in range(2):
        assert abs(spearmanr(Z[:, i], latent_test[:, i])[0]) >= 0.9


def test_hidden_sizes_is_a_deprecated_name_of_hidden_features():
    X = np.random.RandomState(0).normal(size=(40, 3))
    new = _fit(X, n_layers=1, max_iter=2, flow_params={"hidden_features": (8,)})
    with pytest.warns(FutureWarning, match=r"\['hidden_sizes'\] is deprecated"):
        old = _fit(X, n_layers=1, max_iter=2, flow_params={"hidden_sizes": (8,)})
    assert old.flow_.hidden_features == new.flow_.hidden_features == (8,)
    np.testing.assert_array_equal(old.score_samples(X), new.score_samples(X))
    with pytest.raises(ValueError, match="both 'hidden_features' and its deprecated"):
        _fit(X, n_layers=1, max_iter=2,
             flow_params={"hidden_features": (8,), "hidden_sizes": (8,)})
