"""Implicit flow (flow='implicit'): root finding, implicit-function gradients, exact and
estimated log-determinants, and the estimator around it."""

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
from flowpca.flows import ImplicitFlow
from flowpca.flows import _spectral
from flowpca.flows._families import FlowSettings, build_flow

from ._flow_checks import assert_contract_matches_jacobian, penalized_nll_from_jacobian

SMALL = {"hidden_features": (8,)}


def generator(seed):
    return torch.Generator().manual_seed(seed)


def random_flow(n_features, n_layers=2, seed=0, gain=4.0, **kwargs):
    """An evaluation-mode flow whose g's sit at their Lipschitz bound."""
    X = torch.randn(200, n_features, generator=generator(seed), dtype=torch.float64)
    flow = ImplicitFlow.from_data(X, 1e-3, generator=generator(seed + 1), n_layers=n_layers,
                                  output_scale=1.0, **kwargs)
    with torch.no_grad():
        for g in flow._g_modules():
            for weight in g.weights:
                weight.mul_(gain)
            g.finalize()
    return flow.eval()


def random_x(n_samples, n_features, seed=1):
    return 1.5 * torch.randn(n_samples, n_features, generator=generator(seed),
                             dtype=torch.float64)


def autograd_jacobian(flow, x):
    # torch.func cannot see through the root finder's autograd.Function: plain autograd.
    return torch.stack([torch.autograd.functional.jacobian(
        lambda row: flow(row.unsqueeze(0))[0].squeeze(0), row) for row in x])


# ---------------------------------------------------------------- the flow
@settings(max_examples=8, deadline=None)
@given(n_features=st.integers(1, 5), n_layers=st.integers(0, 2), seed=st.integers(0, 99))
def test_exact_log_det_and_jacobian_match_autograd(n_features, n_layers, seed):
    flow = random_flow(n_features, n_layers, seed)
    x = random_x(5, n_features, seed)
    J = autograd_jacobian(flow, x)
    v = random_x(5, n_features, seed + 2)
    V = random_x(5, 2 * n_features, seed + 3).reshape(5, 2, n_features)
    assert_contract_matches_jacobian(flow, x, J, v, V, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_tikhonov_penalty_is_that_of_the_mlp_flow(alpha):
    # The training objective is the MLP flow's: the mean of ||f(x)||^2 / 2 -
    # log|det J_f(x)| + alpha / 2 ||J_f(x)||_F^2, with J_f the autograd Jacobian.
    flow = random_flow(3, n_layers=2, seed=11)
    x = random_x(6, 3)
    J = autograd_jacobian(flow, x)
    expected = penalized_nll_from_jacobian(flow, x, J, alpha)
    torch.testing.assert_close(penalized_nll(flow, x, alpha), expected, rtol=0, atol=1e-9)


def test_log_det_is_the_difference_of_the_two_residual_terms():
    flow = random_flow(3, n_layers=1, seed=4)
    x = random_x(6, 3)
    block = flow.blocks[0]
    with torch.no_grad():
        h = flow._affine(x, None, False)[0]
        z = flow(x)[0]
        eye = torch.eye(3, dtype=torch.float64)
        jx = torch.func.vmap(torch.func.jacrev(lambda r: block.g_x(r[None])[0]))(h)
        jz = torch.func.vmap(torch.func.jacrev(lambda r: block.g_z(r[None])[0]))(z)
        # z is the root: x + g_x(x) = z + g_z(z)
        torch.testing.assert_close(h + block.g_x(h), z + block.g_z(z), rtol=0, atol=1e-9)
        expected = (torch.linalg.slogdet(flow.weight)[1] + torch.linalg.slogdet(eye + jx)[1]
                    - torch.linalg.slogdet(eye + jz)[1])
    torch.testing.assert_close(flow(x)[1], expected, rtol=0, atol=1e-10)


def test_power_series_log_det_is_unbiased():
    # One call estimates every row with one number of terms and independent probes, so
    # the means of the calls over 50 copies of each point are i.i.d.: their mean over
    # 150 calls lies within 5 standard errors of the exact value at each of the 3 points
    # (a false alarm has probability below 2e-6).
    n_features, n_copies, n_calls = 4, 50, 150
    flow = random_flow(n_features, n_layers=1, seed=3)
    x = random_x(3, n_features, seed=4)
    exact = flow(x)[1]
    flow.eval_exact_logdet_max_features = 0
    gen = generator(5)
    with torch.no_grad():
        draws = torch.stack([flow(x.repeat(n_copies, 1), generator=gen)[1].reshape(
            n_copies, 3).mean(dim=0) for _ in range(n_calls)])
    z = (draws.mean(dim=0) - exact).abs() / (draws.std(dim=0) / n_calls ** 0.5)
    assert (z < 5).all(), z


@settings(max_examples=6, deadline=None)
@given(n_features=st.integers(1, 5), seed=st.integers(0, 99))
def test_inverse_round_trip(n_features, seed):
    flow = random_flow(n_features, n_layers=2, seed=seed)
    x = random_x(20, n_features, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        x_back = flow.inverse(flow(x)[0])
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-6)


def test_fixed_point_root_finding_above_the_newton_size():
    # Above NEWTON_MAX_FEATURES the blocks are solved (and differentiated) by fixed-point
    # iteration: the same round trip and log-det.
    n_features = _spectral.NEWTON_MAX_FEATURES + 1
    flow = random_flow(n_features, n_layers=1, seed=2, hidden_features=(8,))
    x = random_x(4, n_features)
    y, log_abs_det = flow(x)
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-6)
    J = flow.jacobian(x)
    torch.testing.assert_close(log_abs_det, torch.linalg.slogdet(J)[1], rtol=0, atol=1e-8)


def test_iteration_cap_warns_both_ways():
    flow = random_flow(3, n_layers=1, seed=0, inverse_max_iter=1)
    x = random_x(5, 3)
    with pytest.warns(ConvergenceWarning, match="ImplicitFlow.forward did not converge"):
        y = flow(x)[0]
    with pytest.warns(ConvergenceWarning, match="ImplicitFlow.inverse did not converge"):
        flow.inverse(y)


def _trainable(flow):
    """``flow`` in training mode with frozen power vectors, its layers at 0.8 of the
    bound: a fixed smooth map of the weights (away from the kink of the normalization
    ``W / max(1, sigma / c)``) with the exact log-det, as finite differences need."""
    flow.exact_logdet_max_features = flow.n_features
    with torch.no_grad():
        for g in flow._g_modules():
            g.n_power_iterations = 0
            for weight in g.weights:
                weight.mul_(0.8)
    return flow.train()


def _loss(flow, x):
    y, log_abs_det = flow(x)
    return (0.5 * y.pow(2).sum(dim=1) - log_abs_det).mean()


@pytest.mark.parametrize("n_features", [3, _spectral.NEWTON_MAX_FEATURES + 1])
def test_implicit_gradients_match_finite_differences(n_features):
    flow = _trainable(random_flow(n_features, n_layers=1, seed=5, hidden_features=(6,)))
    x = random_x(4, n_features).requires_grad_(True)
    loss = _loss(flow, x)
    parameters = [flow.blocks[0].g_z.weights[0], flow.blocks[0].g_z.biases[-1],
                  flow.blocks[0].g_x.weights[-1], flow.blocks[0].g_z.betas[0]]
    grads = torch.autograd.grad(loss, [x, *parameters])
    step = 1e-6
    for tensor, grad in zip([x, *parameters], grads):
        flat, flat_grad = tensor.detach().view(-1), grad.view(-1)
        for i in range(min(3, flat.numel())):
            with torch.no_grad():
                flat[i] += step
                up = _loss(flow, x).item()
                flat[i] -= 2 * step
                down = _loss(flow, x).item()
                flat[i] += step
            assert flat_grad[i].item() == pytest.approx((up - down) / (2 * step),
                                                        rel=1e-5, abs=1e-8)


def test_implicit_gradients_match_the_unrolled_solver():
    # Backpropagating through 300 fixed-point iterations z <- w - g_z(z) (converged to
    # machine precision, Lip(g_z) < 1) gives the same gradients as the adjoint solve.
    flow = _trainable(random_flow(3, n_layers=1, seed=6, hidden_features=(6,)))
    x = random_x(5, 3)
    block = flow.blocks[0]
    parameters = list(block.g_z.parameters()) + list(block.g_x.parameters())

    def unrolled(x):
        h = flow._affine(x, None, False)[0]
        w = h + block.g_x(h)
        z = w
        for _ in range(300):
            z = w - block.g_z(z)
        return z

    target = torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(5, 3)
    implicit = torch.autograd.grad((flow(x)[0] * target).sum(), parameters)
    reference = torch.autograd.grad((unrolled(x) * target).sum(), parameters)
    for a, b in zip(implicit, reference):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("flow_params, match", [
    ({"lipschitz": 1.5}, "lipschitz"),
    ({"hidden_features": (8, 0)}, "hidden_features"),
    ({"activation": "relu"}, "activation"),
    ({"inverse_max_iter": 0}, "inverse_max_iter"),
    ({"inverse_tol": 0.0}, "inverse_tol"),
    ({"width": 3}, "does not accept"),
])
def test_bad_flow_params_are_rejected(flow_params, match):
    X = random_x(50, 3)
    with pytest.raises(ValueError, match=match):
        build_flow("implicit", X, FlowSettings(1e-3, 2, flow_params=flow_params,
                                               generator=generator(0)))
    model = NormalizingFlowPCA(flow="implicit", flow_params=flow_params)
    with pytest.raises(ValueError, match=match):
        model.fit(X.numpy())
    assert not hasattr(model, "flow_")


# ---------------------------------------------------------------- the estimator
@parametrize_with_checks([NormalizingFlowPCA(flow="implicit", n_layers=1, max_iter=3,
                                             flow_params=SMALL)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _fit(X, **kwargs):
    params = dict(flow="implicit", n_layers=2, max_iter=10, flow_params=SMALL,
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
    for g in model.flow_._g_modules():
        assert max(g.spectral_norms()) <= 0.9 + 1e-6


def test_estimator_methods_work(fitted):
    model, X = fitted
    assert model.transform(X[:20]).shape == (20, 2)
    full = _fit(X, n_components=None)
    np.testing.assert_allclose(full.inverse_transform(full.transform(X[:10])), X[:10],
                               atol=1e-6)
    assert model.local_variances(X[:5]).shape == (5, 3)
    assert model.local_directions(X[:5]).shape == (5, 3, 2)
    assert model.local_covariance(X[:5]).shape == (5, 3, 3)
    samples = model.sample(50, random_state=0)
    assert samples.shape == (50, 3) and np.isfinite(samples).all()


def test_pickle_and_skops_round_trips(fitted):
    model, X = fitted
    data = sio.dumps(model)
    for loaded in (pickle.loads(pickle.dumps(model)),
                   sio.loads(data, trusted=sio.get_untrusted_types(data=data))):
        np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


def test_density_integrates_to_one_in_2d():
    X, _ = make_banana(600, random_state=0)
    model = _fit(X, n_layers=2, max_iter=20, flow_params={"hidden_features": (16,)})
    # Bi-Lipschitz flow, Gaussian tails: 12 data standard deviations hold the mass.
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
    model = _fit(X_train, n_components=2, n_layers=4, max_iter=60, flow_params=None)
    assert model.score(X_test) > linear + 0.5
    Z = model.transform(X_test)
    for i in range(2):
        assert abs(spearmanr(Z[:, i], latent_test[:, i])[0]) >= 0.9
