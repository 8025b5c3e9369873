"""zuko's flows behind the Flow contract: the adapter, flow='nsf' / 'maf' in the
estimator, persistence, the optional dependency, and density / component quality."""

import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
import zuko
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.utils.estimator_checks import parametrize_with_checks

import flowpca.flows.zuko
from flowpca import NormalizingFlowPCA
from flowpca.exceptions import AmbiguousInverseWarning
from flowpca.flows import MAFFlow, NSFFlow, ZukoFlow
from flowpca.flows._families import FlowSettings, build_flow

from .conftest import PAPER_TRAINING

SMALL = {"hidden_features": (16, 16)}  # conditioner sizes that keep the API tests fast
FAMILIES = {"nsf": NSFFlow, "maf": MAFFlow}


def autograd_jacobians(flow, x):
    """Per-row Jacobians of ``flow`` by reverse-mode autograd, one row at a time."""
    return torch.stack([torch.autograd.functional.jacobian(
        lambda row: flow(row.unsqueeze(0))[0].squeeze(0), row) for row in x])


def random_flow(cls, n_features, seed):
    """A flow with random standardization and weights moved away from the init."""
    flow = cls(n_features, n_layers=2, hidden_features=(16, 16), seed=seed)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=rng,
                                             dtype=parameter.dtype))
        flow.shift.copy_(torch.randn(n_features, generator=rng, dtype=torch.float64))
        flow.scale.copy_(torch.rand(n_features, generator=rng, dtype=torch.float64) + 0.5)
    return flow


# ----------------------------------------------------------------------------- adapter
@pytest.mark.parametrize("family", list(FAMILIES))
@settings(max_examples=8, deadline=None)
@given(n_features=st.integers(1, 6), seed=st.integers(0, 2**16))
@example(n_features=5, seed=271)  # a point where ||J^-1|| ~ 4e8 (CI failure, 2026-11-25)
def test_log_det_and_inverse_are_exact(family, n_features, seed):
    flow = random_flow(FAMILIES[family], n_features, seed)
    # Points well inside and beyond the splines' bound (|z| > 5 is the identity tail).
    x = torch.randn(8, n_features, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64) * 4
    y, log_abs_det = flow(x)
    J = autograd_jacobians(flow, x)
    np.testing.assert_allclose(log_abs_det.detach(), torch.linalg.slogdet(J)[1],
                               rtol=0, atol=1e-10)
    x_back = flow.inverse(y).detach()
    np.testing.assert_allclose(flow(x_back)[0].detach(), y.detach(), rtol=0, atol=1e-12)
    # The inverse is exact up to rounding in y amplified by the local condition: random
    # splines reach ||J^-1|| ~ 1e8 at some points, so x can only be recovered to ~1e-16 * that.
    inverse_gain = torch.linalg.matrix_norm(torch.linalg.pinv(J), ord=2)
    x_error = (x_back - x).abs().amax(dim=1)
    assert torch.all(x_error <= 1e-12 * (1 + inverse_gain)), (x_error, inverse_gain)
    np.testing.assert_allclose(flow.jacobian(x).detach(), J, rtol=0, atol=1e-10)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    np.testing.assert_allclose(flow.jvp(x, v)[1].detach(), (J @ v.unsqueeze(-1)).squeeze(-1),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(flow.frobenius_sq(x).detach(), J.pow(2).sum(dim=(1, 2)),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hutchinson_estimate_is_unbiased(family):
    flow = random_flow(FAMILIES[family], 3, seed=0)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = flow.frobenius_sq(x).detach()
    # 4000 one-probe estimates per point, as one batch of repeated rows.
    estimate = flow.frobenius_sq(x.repeat(4000, 1), "hutchinson",
                                 generator=torch.Generator().manual_seed(0)).detach()
    estimate = estimate.reshape(4000, 4).mean(dim=0)
    # Var of one probe is 2 ||J^T J||_F^2 <= 2 ||J||_F^4: 5 standard errors.
    np.testing.assert_array_less((estimate - exact).abs(), 5 * exact * np.sqrt(2 / 4000))
    # forward_and_frobenius_sq: the same estimate from the same generator state.
    y, log_abs_det, fused = flow.forward_and_frobenius_sq(
        x, "hutchinson", n_probes=3, generator=torch.Generator().manual_seed(5))
    alone = flow.frobenius_sq(x, "hutchinson", n_probes=3,
                              generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(fused, alone, rtol=0, atol=0)
    torch.testing.assert_close((y, log_abs_det), flow(x), rtol=0, atol=0)


def test_penalty_gradient_reaches_the_parameters():
    flow = random_flow(NSFFlow, 2, seed=3)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    parameter = next(flow.parameters())
    exact = torch.autograd.grad(flow.frobenius_sq(x).sum(), parameter)[0]
    # Finite difference along the gradient: d/dt F(theta + t g) = ||g||^2 at t = 0.
    direction = exact / exact.norm()
    with torch.no_grad():
        values = []
        for t in (-1e-6, 1e-6):
            parameter.add_(t * direction)
            values.append(float(flow.frobenius_sq(x).sum()))
            parameter.sub_(t * direction)
    assert (values[1] - values[0]) / 2e-6 == pytest.approx(float(exact.norm()), rel=1e-5)


def test_under_no_grad_results_carry_no_graph():
    flow = random_flow(NSFFlow, 3, seed=1)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        J = flow.jacobian(x)
        F = flow.frobenius_sq(x, "hutchinson", generator=torch.Generator().manual_seed(0))
    assert not J.requires_grad and not F.requires_grad


def test_construction_is_seeded_and_leaves_the_global_rng_alone():
    # (The autouse fixture checks the global RNG; zuko initializes from it.)
    a, b, c = NSFFlow(3, seed=7), NSFFlow(3, seed=7), NSFFlow(3, seed=8)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    assert any(not torch.equal(value, c.state_dict()[key])
               for key, value in a.state_dict().items())
    assert next(a.parameters()).dtype == torch.float64


def test_builders_standardize_and_read_flow_params():
    X = torch.tensor(np.random.RandomState(0).normal(size=(50, 3)) * [10.0, 1.0, 0.0])
    settings_ = FlowSettings(alpha=1e-2, n_layers=2, flow_params={"bins": 5, **SMALL},
                             generator=torch.Generator().manual_seed(0))
    flow = build_flow("nsf", X, settings_)
    assert isinstance(flow, NSFFlow)
    assert flow.get_config() == {"n_features": 3, "n_layers": 2, "hidden_features": (16, 16),
                                 "bins": 5, "bound": 5.0, "seed": flow.seed}
    # The standard deviation (with the floor), widened where a point would fall outside
    # 90 % of the splines' domain.
    deviation = (X - X.mean(dim=0)).abs().amax(dim=0)
    torch.testing.assert_close(flow.scale, torch.maximum(
        (X.var(dim=0, unbiased=False) + 1e-2).sqrt(), deviation / 4.5))
    with pytest.raises(ValueError, match="does not accept"):
        build_flow("maf", X, FlowSettings(alpha=0.0, n_layers=1, flow_params={"bins": 4},
                                          generator=torch.Generator()))


@pytest.mark.parametrize("bound", [5.0, 8.0])
def test_nsf_keeps_every_training_point_inside_the_spline_domain(bound):
    # A heavy tail (a chi-square-like feature): beyond the domain a spline is the identity.
    rng = np.random.RandomState(1)
    e = rng.normal(size=(400, 2))
    X = torch.tensor(np.column_stack([e[:, 0], e[:, 0] ** 4 + 0.1 * e[:, 1]]))
    X = X - X.mean(dim=0)
    flow = build_flow("nsf", X, FlowSettings(alpha=0.0, n_layers=1, flow_params={
        "bound": bound, **SMALL}, generator=torch.Generator().manual_seed(0)))
    standardized = (X - flow.shift) / flow.scale
    assert float(standardized.abs().max()) <= 0.9 * bound + 1e-12
    assert flow.bound == bound
    y, log_abs_det = flow(X)
    torch.testing.assert_close(flow.inverse(y), X)


def user_flow(cls, *args, **kwargs):
    """A zuko flow built as a user would, without touching the global RNG here."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls(*args, **kwargs)


def test_wrapping_checks_the_zuko_flow():
    flow = ZukoFlow(user_flow(zuko.flows.NSF, 2, transforms=1, passes=2,
                              hidden_features=(8,)))
    assert flow.n_features == 2
    with pytest.raises(ValueError, match="standard normal"):
        ZukoFlow(user_flow(zuko.flows.NCSF, 2, transforms=1))  # a uniform base on the torus
    with pytest.raises(ValueError, match="unconditional"):
        ZukoFlow(user_flow(zuko.flows.MAF, 2, context=3, transforms=1))
    with pytest.raises(ValueError, match="n_features is required"):
        ZukoFlow(user_flow(zuko.flows.MAF, 2, transforms=1).transform)
    with pytest.raises(TypeError, match="zuko.flows.Flow"):
        ZukoFlow(user_flow(torch.nn.Linear, 2, 2))
    with pytest.raises(ValueError, match="acts on 2 features"):
        ZukoFlow(user_flow(zuko.flows.MAF, 2, transforms=1), n_features=3)


def test_missing_zuko_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "zuko", None)  # `import zuko` now raises ImportError
    monkeypatch.setitem(sys.modules, "zuko.flows", None)
    X = np.random.RandomState(0).normal(size=(30, 2))
    for family in ("nsf", "maf"):
        model = NormalizingFlowPCA(flow=family, max_iter=1, early_stopping=False,
        **PAPER_TRAINING)
        with pytest.raises(ImportError, match="pip install zuko"):
            model.fit(X)
        assert not hasattr(model, "flow_")


# ----------------------------------------------------------------------------- estimator
def sine(n_samples, seed):
    rng = np.random.RandomState(seed)
    x1 = rng.uniform(-3, 3, n_samples)
    return np.c_[x1, np.sin(x1) + 0.1 * rng.normal(size=n_samples)]


@pytest.fixture(scope="module", params=["nsf", "maf"])
def fitted(request):
    X = sine(200, seed=0)
    model = NormalizingFlowPCA(flow=request.param, n_layers=2, flow_params=SMALL,
                               max_iter=15, random_state=0, early_stopping=False,
        **PAPER_TRAINING)
    with pytest.warns(Warning):  # max_iter reached
        model.fit(X)
    return model, X


def test_estimator_methods(fitted):
    model, X = fitted
    Z = model.transform(X)
    assert Z.shape == (200, 2) and np.isfinite(Z).all()
    with warnings.catch_warnings():  # folds of a short fit are counted, not an error
        warnings.simplefilter("ignore", AmbiguousInverseWarning)
        np.testing.assert_allclose(model.inverse_transform(Z), X, atol=1e-6)
    variances = model.local_variances(X[:10])
    assert (np.diff(variances, axis=1) <= 0).all() and (variances > 0).all()
    assert np.isfinite(model.score(X))
    samples = model.sample(50, random_state=0)
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    np.testing.assert_array_equal(samples, model.sample(50, random_state=0))


def test_fit_is_reproducible(fitted):
    model, X = fitted
    with pytest.warns(Warning):
        again = NormalizingFlowPCA(**model.get_params()).fit(X)
    np.testing.assert_array_equal(again.score_samples(X), model.score_samples(X))
    np.testing.assert_array_equal(again.loss_curve_, model.loss_curve_)


def test_pickle_and_skops_round_trip(fitted):
    model, X = fitted
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.score_samples(X), model.score_samples(X))
    np.testing.assert_array_equal(restored.transform(X), model.transform(X))
    import skops.io as sio
    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    assert untrusted == ["flowpca._estimator.NormalizingFlowPCA"]
    loaded = sio.loads(sio.dumps(model), trusted=untrusted)
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


def test_accepts_a_raw_zuko_flow_and_pickles_it():
    X = sine(100, seed=1)
    raw = user_flow(zuko.flows.NSF, 2, transforms=1, passes=2, hidden_features=(8,))
    before = {key: value.clone() for key, value in raw.state_dict().items()}
    with pytest.warns(Warning):
        model = NormalizingFlowPCA(flow=raw, max_iter=3, random_state=0, early_stopping=False,
        **PAPER_TRAINING).fit(X)
    assert isinstance(model.flow_, ZukoFlow)
    for key, value in raw.state_dict().items():  # the user's flow is not trained
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.score_samples(X), model.score_samples(X))
    with pytest.raises(ValueError, match="acts on 2 features"):
        NormalizingFlowPCA(flow=raw, max_iter=1, early_stopping=False,
        **PAPER_TRAINING).fit(np.c_[X, X])
    with pytest.raises(TypeError, match="zuko.flows.Flow"):
        NormalizingFlowPCA(flow=user_flow(torch.nn.Linear, 2, 2), max_iter=1, early_stopping=False,
        **PAPER_TRAINING).fit(X)


@parametrize_with_checks([NormalizingFlowPCA(flow="nsf", n_layers=1,
                                             flow_params={"hidden_features": (8,)},
                                             max_iter=20, early_stopping=False,
        **PAPER_TRAINING)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# ----------------------------------------------------------------------------- quality
@pytest.mark.slow
def test_nsf_local_directions_are_ordered_like_the_mlps_on_the_banana():
    from flowpca.datasets import make_banana

    X, _ = make_banana(1000, random_state=0)
    models = []
    for params in (dict(flow="nsf", n_layers=3), dict(flow="mlp")):
        with pytest.warns(Warning):  # max_iter reached
            models.append(NormalizingFlowPCA(max_iter=100, random_state=0, **{
                **PAPER_TRAINING, "early_stopping": False, "learning_rate_init": 1e-2,
                **params}).fit(X[:500]))
    X_test = X[500:]
    nsf, mlp = (model.local_directions(X_test) for model in models)
    # The largest-variance local direction is the same one (up to sign) almost everywhere.
    cosines = np.abs(np.einsum("nd,nd->n", nsf[:, :, 0], mlp[:, :, 0]))
    assert np.median(cosines) >= 0.95 and np.mean(cosines >= 0.9) >= 0.9
    # The NSF's local variance v^T Sigma(x) v, Sigma(x) = sum_k var_k d_k d_k^T, is larger
    # along the MLP's first local direction than along its second. Measured on data /
    # model seeds 0 / 1 / 2: at 98.4 % / 100 % / 99.4 % of the points.
    variances = models[0].local_variances(X_test)
    along = np.einsum("nk,nkj->nj", variances, np.einsum("ndk,ndj->nkj", nsf, mlp) ** 2)
    assert np.mean(along[:, 0] > along[:, 1]) >= 0.95
    # Both see a clearly dominant direction, by similar margins (median ratio of the
    # first to the second local variance, NSF / MLP, measured 17 / 19, 27 / 25, 24 / 23).
    ratios = [np.median(v[:, 0] / v[:, 1]) for v in
              (variances, models[1].local_variances(X_test))]
    assert min(ratios) > 5 and max(ratios) / min(ratios) < 3, ratios


@pytest.mark.parametrize("cls", [NSFFlow, MAFFlow])
def test_fitted_jacobian_by_forward_mode_equals_autograd(cls, monkeypatch):
    # From 8 features a fitted flow's Jacobian is taken by forward mode, in chunks (here of
    # 16 rows); it must be the reverse-mode one (torch.autograd.functional.jacobian).
    monkeypatch.setattr(flowpca.flows.zuko, "_FORWARD_MODE_TANGENTS", 160)
    X = torch.tensor(np.random.RandomState(3).normal(size=(37, 10)))
    flow = cls(10, n_layers=2, **SMALL).standardize_for(X).requires_grad_(False)
    with torch.no_grad():
        J = flow.jacobian(X)
    expected = torch.stack([torch.autograd.functional.jacobian(
        lambda row: flow(row[None])[0][0], row) for row in X])
    torch.testing.assert_close(J, expected, rtol=1e-10, atol=1e-12)
