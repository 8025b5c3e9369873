"""RealNVP flow (flow='realnvp'): exactness against autograd, and the estimator around it."""

import math
import pickle
import warnings

import numpy as np
import pytest
import skops.io as sio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import trapezoid
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from flowpca import NormalizingFlowPCA
from flowpca.exceptions import AmbiguousInverseWarning
from flowpca.datasets import make_banana, make_sine_wave
from flowpca.flows import Flow, RealNVPFlow
from flowpca.flows._families import FlowSettings, build_flow

SMALL = (16, 16)  # conditioner widths that keep the tests fast


def generator(seed):
    return torch.Generator().manual_seed(seed)


def random_flow(n_features, n_layers, hidden_features=SMALL, seed=0, scale_clamp=3.0):
    """A flow with random, well-conditioned input layer and non-trivial couplings."""
    gen = generator(seed)
    flow = RealNVPFlow(n_features, n_layers, hidden_features, scale_clamp)
    flow.reset_parameters(gen)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(n_features, n_features, generator=gen,
                                           dtype=torch.float64))
        d = 0.5 + 1.5 * torch.rand(n_features, generator=gen, dtype=torch.float64)
        flow.weight.copy_(q * d)
        flow.bias.copy_(0.5 * torch.randn(n_features, generator=gen, dtype=torch.float64))
        for conditioner in flow.conditioners:
            last_weight, last_bias = conditioner.weights[-1], conditioner.biases[-1]
            last_weight.copy_(0.5 * torch.randn(last_weight.shape, generator=gen,
                                                dtype=torch.float64))
            last_bias.copy_(0.5 * torch.randn(last_bias.shape, generator=gen,
                                              dtype=torch.float64))
    return flow


def random_x(n_samples, n_features, seed=1):
    return 1.5 * torch.randn(n_samples, n_features, generator=generator(seed),
                             dtype=torch.float64)


def autograd_jacobian(flow, x):
    def single(row):
        return flow.forward(row.unsqueeze(0))[0].squeeze(0)
    return torch.func.vmap(torch.func.jacrev(single))(x)


# ---------------------------------------------------------------- the flow
def test_is_a_flow_starting_at_the_identity():
    flow = RealNVPFlow(3)
    assert isinstance(flow, Flow)
    assert len(flow.conditioners) == 6
    assert all(p.dtype == torch.float64 for p in flow.parameters())
    x = random_x(5, 3)
    y, log_abs_det = flow(x)
    assert torch.equal(y, x)
    assert torch.equal(log_abs_det, torch.zeros(5, dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(n_features=st.integers(1, 6), n_layers=st.integers(0, 4),
       seed=st.integers(0, 2**31 - 1))
def test_log_abs_det_and_jacobian_match_autograd(n_features, n_layers, seed):
    flow = random_flow(n_features, n_layers, seed=seed)
    x = random_x(6, n_features, seed + 1)
    y, log_abs_det = flow(x)
    J = autograd_jacobian(flow, x)
    torch.testing.assert_close(log_abs_det, torch.linalg.slogdet(J)[1], rtol=0, atol=1e-10)
    torch.testing.assert_close(flow.jacobian(x), J, rtol=1e-10, atol=1e-10)
    v = random_x(6, n_features, seed + 2)
    y_jvp, jv = flow.jvp(x, v)
    torch.testing.assert_close(y_jvp, y, rtol=0, atol=0)
    torch.testing.assert_close(jv, torch.einsum("nij,nj->ni", J, v), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flow.frobenius_sq(x), J.pow(2).sum(dim=(1, 2)),
                               rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(n_features=st.integers(1, 6), n_layers=st.integers(0, 4),
       seed=st.integers(0, 2**31 - 1))
def test_inverse_round_trip(n_features, n_layers, seed):
    flow = random_flow(n_features, n_layers, seed=seed)
    x = random_x(8, n_features, seed + 1)
    torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=0, atol=1e-10)
    y = random_x(8, n_features, seed + 2)
    torch.testing.assert_close(flow(flow.inverse(y))[0], y, rtol=0, atol=1e-10)


def test_inverse_jacobian_products_match_the_inverse_jacobian():
    flow = random_flow(4, 3, seed=3)
    x = random_x(5, 4)
    inverse_J = torch.linalg.inv(autograd_jacobian(flow, x))
    v = random_x(5, 4, seed=2)
    torch.testing.assert_close(flow.inverse_jvp(x, v),
                               torch.einsum("nij,nj->ni", inverse_J, v))
    apply_inverse, apply_inverse_transpose = flow.inverse_jacobian_operators(x)
    V = torch.randn(5, 2, 4, generator=generator(4), dtype=torch.float64)
    torch.testing.assert_close(apply_inverse(V), torch.einsum("nij,nqj->nqi", inverse_J, V))
    torch.testing.assert_close(apply_inverse_transpose(V),
                               torch.einsum("nji,nqj->nqi", inverse_J, V))


def test_fused_penalty_pass_and_hutchinson_probes():
    flow = random_flow(3, 4, seed=5)
    x = random_x(7, 3)
    y, log_abs_det = flow(x)
    y2, log_abs_det2, frobenius = flow.forward_and_frobenius_sq(x)
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    torch.testing.assert_close(log_abs_det2, log_abs_det, rtol=0, atol=0)
    torch.testing.assert_close(frobenius, flow.frobenius_sq(x), rtol=1e-12, atol=0)
    # Hutchinson: exactly mean_k ||J eps_k||^2 for the probes the generator draws.
    probes = torch.randn((7, 3, 3), generator=generator(9), dtype=torch.float64)
    expected = torch.einsum("nij,nkj->nki", autograd_jacobian(flow, x), probes)
    estimate = flow.frobenius_sq(x, "hutchinson", n_probes=3, generator=generator(9))
    torch.testing.assert_close(estimate, expected.pow(2).sum(dim=2).mean(dim=1))
    with pytest.raises(ValueError, match="torch.Generator"):
        flow.frobenius_sq(x, "hutchinson")
    with pytest.raises(ValueError, match="method must be one of"):
        flow.frobenius_sq(x, "trace")


def test_log_scales_are_bounded_by_the_clamp():
    # One coupling on two features moves one of them: log|det J| - log|det W| = s(a).
    flow = random_flow(2, 1, seed=0, scale_clamp=0.5)
    with torch.no_grad():
        flow.conditioners[0].weights[-1].mul_(1e6)
    x = random_x(50, 2)
    y, log_abs_det = flow(x)
    assert torch.isfinite(y).all()
    log_scale = log_abs_det - torch.linalg.slogdet(flow.weight)[1]
    # The clamp is exact; the difference of the two log-determinants is not (rounding).
    assert log_scale.abs().max() <= 0.5 + 1e-12
    assert log_scale.abs().median() > 0.49  # saturated: the bound is reached
    torch.testing.assert_close(flow.inverse(y), x, rtol=0, atol=1e-8)


def test_one_feature_is_an_affine_map():
    flow = random_flow(1, 3, seed=2)
    x = random_x(20, 1)
    J = flow.jacobian(x)
    torch.testing.assert_close(J, J[:1].expand_as(J), rtol=1e-12, atol=0)


def test_from_data_starts_at_the_whitening():
    X = torch.as_tensor(make_sine_wave(500, random_state=0)[0], dtype=torch.float64)
    X = X - X.mean(dim=0)
    alpha = 1e-3
    flow = RealNVPFlow.from_data(X, alpha, n_layers=2, hidden_features=SMALL,
                                 generator=generator(0))
    y, log_abs_det = flow(X)
    covariance = X.T @ X / X.shape[0] + alpha * torch.eye(3, dtype=torch.float64)
    whitened_covariance = flow.weight @ covariance @ flow.weight.T
    torch.testing.assert_close(whitened_covariance, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(y, X @ flow.weight.T, rtol=0, atol=0)  # couplings: identity
    torch.testing.assert_close(log_abs_det, torch.full_like(log_abs_det, -0.5 * float(
        torch.linalg.slogdet(covariance)[1])))
    # Principal axes in decreasing variance.
    variances = 1 / flow.weight.pow(2).sum(dim=1)
    assert torch.all(variances[:-1] >= variances[1:])


def test_config_rebuilds_the_flow():
    flow = random_flow(3, 2, hidden_features=(8, 4), seed=1)
    config = flow.get_config()
    assert config == {"n_features": 3, "n_layers": 2, "hidden_features": (8, 4),
                      "scale_clamp": 3.0}
    rebuilt = RealNVPFlow(**config)
    rebuilt.load_state_dict(flow.state_dict())
    x = random_x(4, 3)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt(x), flow(x)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_features=(0, 8)), "hidden_features"),
    (dict(hidden_features=(8.0,)), "hidden_features"),
    (dict(hidden_features=(True,)), "hidden_features"),
    (dict(hidden_features=512), "hidden_features"),
    (dict(scale_clamp=0.0), "scale_clamp"),
    (dict(scale_clamp=math.inf), "scale_clamp"),
    (dict(scale_clamp="3"), "scale_clamp"),
    (dict(n_layers=-1), "n_layers"),
])
def test_invalid_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RealNVPFlow(3, **kwargs)


def test_builder_uses_n_layers_and_flow_params():
    X = random_x(40, 3)
    settings_ = FlowSettings(alpha=1e-4, n_layers=2, generator=generator(0),
                             flow_params={"hidden_features": [8], "scale_clamp": 1.5})
    flow = build_flow("realnvp", X, settings_)
    assert isinstance(flow, RealNVPFlow)
    assert flow.get_config() == {"n_features": 3, "n_layers": 2,
                                 "hidden_features": (8,), "scale_clamp": 1.5}


# ---------------------------------------------------------------- the estimator
FAST = dict(flow="realnvp", n_layers=4, flow_params={"hidden_features": SMALL},
            max_iter=20, random_state=0)


def _fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@pytest.fixture(scope="module")
def fitted():
    X = make_sine_wave(300, random_state=0)[0]
    return _fit_quietly(NormalizingFlowPCA(**FAST), X), X


def test_estimator_fits_a_realnvp_flow_better_than_the_gaussian(fitted):
    model, X = fitted
    assert isinstance(model.flow_, RealNVPFlow)
    assert model.flow_.get_config()["n_layers"] == 4
    X_test = make_sine_wave(300, random_state=1)[0]
    gaussian = NormalizingFlowPCA(flow="linear").fit(X).score(X_test)
    assert model.score(X_test) > gaussian + 0.2


def test_transform_inverse_transform_round_trip(fitted):
    model, X = fitted
    components = model.transform(X[:40])
    assert components.shape == (40, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        # A few epochs leave folds in the component map: other preimages are counted,
        # and the round trip must still return the original points.
        warnings.simplefilter("ignore", AmbiguousInverseWarning)
        back = model.inverse_transform(components)
    np.testing.assert_allclose(back, X[:40], atol=1e-6)


def test_local_diagnostics(fitted):
    model, X = fitted
    variances = model.local_variances(X[:30])
    directions = model.local_directions(X[:30])
    covariance = model.local_covariance(X[:30])
    assert variances.shape == (30, 3) and directions.shape == (30, 3, 3)
    assert covariance.shape == (30, 3, 3)
    assert np.all(variances > 0) and np.all(np.diff(variances, axis=1) <= 0)
    gram = np.einsum("nij,nik->njk", directions, directions)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(covariance)[:, ::-1], variances,
                               rtol=1e-8)


def test_sample(fitted):
    model, _ = fitted
    samples = model.sample(50, random_state=0)
    assert samples.shape == (50, 3) and np.isfinite(samples).all()
    np.testing.assert_array_equal(samples, model.sample(50, random_state=0))


def test_pickle_and_skops_round_trips_give_identical_scores(fitted, tmp_path):
    model, X = fitted
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    for loaded in (pickle.loads(pickle.dumps(model)),
                   sio.load(path, trusted=sio.get_untrusted_types(file=path))):
        assert isinstance(loaded.flow_, RealNVPFlow)
        np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
        np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


@pytest.mark.parametrize("flow_params, match", [
    ({"hidden": (8,)}, "does not accept"),
    ({"hidden_features": (0,)}, "hidden_features"),
    ({"hidden_features": (-8, 8)}, "hidden_features"),
    ({"hidden_features": 64}, "hidden_features"),
    ({"scale_clamp": -1.0}, "scale_clamp"),
    ({"scale_clamp": float("nan")}, "scale_clamp"),
])
def test_bad_flow_params_raise_and_change_nothing(fitted, flow_params, match):
    model, X = fitted
    scores = model.score_samples(X)
    state = {key: value for key, value in vars(model).items() if key.endswith("_")}
    bad = pickle.loads(pickle.dumps(model)).set_params(flow_params=flow_params)
    with pytest.raises(ValueError, match=match):
        bad.fit(X)
    assert set(state) == {key for key in vars(bad) if key.endswith("_")}
    np.testing.assert_array_equal(bad.score_samples(X), scores)


def test_singular_data_without_the_floor_are_rejected():
    # The flow starts at the whitening (Sigma + alpha I)^-1/2: no such start with alpha=0.
    X = make_sine_wave(100, random_state=0)[0]
    X = np.column_stack([X, X[:, 0] - X[:, 1]])
    with pytest.raises(ValueError, match="singular"):
        NormalizingFlowPCA(**{**FAST, "alpha": 0.0}).fit(X)


def test_density_integrates_to_one_in_2d():
    X, _ = make_banana(600, random_state=0)
    model = _fit_quietly(NormalizingFlowPCA(**FAST), X)
    half_width, n = 20.0, 401
    axes = [model.mean_[i] + np.linspace(-half_width, half_width, n) for i in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(model.score_samples(grid)).reshape(n, n)
    inside = trapezoid(trapezoid(density, axes[1], axis=1), axes[0])
    # Monte Carlo mass outside the box, from the flow's inverse.
    z = torch.randn(100_000, 2, generator=generator(1), dtype=torch.float64)
    with torch.no_grad():
        samples = model.flow_.inverse(z).numpy() + model.mean_
    outside = 1.0 - np.mean(np.all(np.abs(samples - model.mean_) <= half_width, axis=1))
    assert outside < 1e-3
    assert inside + outside == pytest.approx(1.0, abs=1e-3)


# The checks test scikit-learn's conventions, not the fit: small conditioners, two
# couplings and 50 epochs keep their ~60 fits fast (the defaults cost ~20 times as much).
@parametrize_with_checks([NormalizingFlowPCA(flow="realnvp", n_layers=2, max_iter=50,
                                             flow_params={"hidden_features": SMALL})])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
