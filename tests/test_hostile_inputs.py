"""Hostile numbers: features on wildly different scales, constant columns, duplicated
rows, two samples, one feature, float32 input, values near the float limits.

Each input either fits to a model whose scores and components are finite (and, for the
linear flow, equal to the closed-form Gaussian) or is refused with a clear ValueError
before any training. Never a model with NaNs in it.
"""

import re
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

import flowpca.density._fitting
import flowpca.flows
from flowpca import NormalizingFlowPCA
from flowpca.exceptions import DegenerateFitWarning

from .conftest import PAPER_TRAINING

_SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow])

# Messages of the ValueErrors a hostile X may get, all raised before training.
_CLEAR_ERRORS = re.compile(r"covariance of X is singular|values of X are too (large|small)"
                           r"|variances of X span too wide a range"
                           r"|contains infinity|too large for dtype")

_FLOWS = {"linear": dict(flow="linear"), "mlp": dict(flow="mlp", n_layers=2, max_iter=3)}


@st.composite
def hostile_data(draw):
    n_samples = draw(st.integers(2, 25))
    n_features = draw(st.integers(1, 4))
    rng = np.random.RandomState(draw(st.integers(0, 2**16)))
    X = rng.normal(size=(n_samples, n_features))
    # Per-feature scales from 1e-8 to 1e8, and offsets.
    X *= 10.0 ** np.array(draw(st.lists(st.integers(-8, 8), min_size=n_features,
                                        max_size=n_features)))
    X += np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, -1e3, 1e6]),
                                min_size=n_features, max_size=n_features)))
    for column in np.flatnonzero(draw(st.lists(st.booleans(), min_size=n_features,
                                               max_size=n_features))):
        X[:, column] = draw(st.sampled_from([0.0, 3.0, -1e7]))  # constant columns
    if draw(st.booleans()):  # duplicated rows
        X = X[rng.randint(0, max(1, n_samples // 2), size=n_samples)]
    # The whole matrix towards the float limits.
    with np.errstate(over="ignore"):  # inf: refused by the input validation
        X = X * draw(st.sampled_from([1.0, 1.0, 1e140, 1e150, 1e300, 1e-150, 1e-300]))
    if draw(st.booleans()):
        with np.errstate(over="ignore"):
            X = X.astype(np.float32)  # overflows to inf above ~3e38
    return X


def _fit_or_refuse(params, X):
    """The fitted model, or None after checking that the refusal is a clear ValueError
    raised before any training."""
    with mock.patch.object(flowpca.density._fitting, "train_flow",
                           wraps=flowpca.density._fitting.train_flow) as training, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", DegenerateFitWarning)
        # No overflow or invalid value in flowpca's own arithmetic on the way (numpy
        # attributes those to the calling line); scikit-learn's validation may warn on
        # inf before it raises.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning,
                                module="numpy")
        warnings.filterwarnings("error", category=RuntimeWarning, module="flowpca")
        try:
            return NormalizingFlowPCA(random_state=0, **params).fit(X)
        except ValueError as error:
            assert _CLEAR_ERRORS.search(str(error)), str(error)
            assert training.call_count == 0, "refused only after training"
            return None


def _check_finite(model, X):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning,
                                module="numpy")
        warnings.filterwarnings("error", category=RuntimeWarning, module="flowpca")
        scores, components = model.score_samples(X), model.transform(X)
    assert np.isfinite(scores).all()
    assert np.isfinite(components).all()
    assert np.isfinite(model.explained_variance_).all()
    assert (model.explained_variance_ > 0).all()
    assert all(torch.isfinite(p).all() for p in model.flow_.parameters())
    return scores


@pytest.mark.parametrize("alpha", [5e-5, 0.0])
@_SETTINGS
@given(X=hostile_data())
def test_linear_flow_fits_correctly_or_refuses(X, alpha):
    model = _fit_or_refuse(dict(_FLOWS["linear"], alpha=alpha), X)
    if model is None:
        return
    scores = _check_finite(model, X)
    # The closed-form Gaussian: the biased variances of the centered data (PCA's, up to
    # the factor (n - 1) / n) plus the floor alpha...
    X64 = X.astype(np.float64)
    n_samples, n_features = X64.shape
    Xc = X64 - model.mean_
    assert np.all(np.abs(Xc.mean(axis=0)) <= 1e-12 * (np.abs(X64).max(axis=0) + 1e-300))
    singular_values = np.linalg.svd(Xc, compute_uv=False)
    expected = np.full(n_features, alpha)
    expected[:singular_values.size] += singular_values**2 / n_samples
    top = max(expected.max(), np.finfo(float).tiny)
    np.testing.assert_allclose(model.explained_variance_, expected, rtol=1e-6,
                               atol=1e-9 * top)
    # ... and the flow's log-likelihood is that of N(mean_, V diag(variances) V^T), up
    # to the rounding of the projections: an error delta ~ D eps |x - mean_| in
    # p = V^T (x - mean_) moves the quadratic term by (2 |p| delta + delta^2) / variance,
    # which for variances spanning ~1/eps^2 (huge features, floor alpha) is nats.
    variances = model.explained_variance_
    projections = Xc @ model.components_.T
    quadratic = (projections**2 / variances).sum(axis=1)
    expected_scores = -0.5 * quadratic - 0.5 * np.log(2 * np.pi * variances).sum()
    delta = 4 * n_features * np.finfo(float).eps * np.linalg.norm(Xc, axis=1, keepdims=True)
    rounding = ((2 * np.abs(projections) * delta + delta**2) / variances).sum(axis=1)
    error = np.abs(scores - expected_scores)
    assert np.all(error <= 1e-8 * (1 + np.abs(expected_scores)) + rounding), (
        error, rounding)


@pytest.mark.parametrize("alpha", [5e-5, 0.0])
@settings(_SETTINGS, max_examples=60)
@given(X=hostile_data())
def test_mlp_flow_fits_finite_or_refuses(X, alpha):
    model = _fit_or_refuse(dict(_FLOWS["mlp"], alpha=alpha), X)
    if model is not None:
        _check_finite(model, X)


# ---------------------------------------------------------------- the cases by name
_rng = np.random.RandomState(0)
_NAMED = {
    "scales 1e-8 to 1e8": _rng.normal(size=(40, 4)) * np.array([1e-8, 1.0, 1e4, 1e8]),
    "constant column": np.c_[_rng.normal(size=(40, 2)), np.full(40, 3.0)],
    "duplicated rows": np.repeat(_rng.normal(size=(8, 3)), 5, axis=0),
    "two samples": _rng.normal(size=(2, 3)),
    "one feature": _rng.normal(size=(40, 1)),
    "float32": _rng.normal(size=(40, 3)).astype(np.float32),
    "float32 near its limit": (_rng.normal(size=(40, 3)) * 1e37).astype(np.float32),
    "1e140": _rng.normal(size=(40, 3)) * 1e140,
    "1e-300": _rng.normal(size=(40, 3)) * 1e-300,
    "offset 1e300": _rng.normal(size=(40, 3)) + 1e300,  # constant once rounded
}


@pytest.mark.parametrize("flow", sorted(_FLOWS))
@pytest.mark.parametrize("name", sorted(_NAMED))
def test_named_hostile_inputs_fit_with_the_default_alpha(name, flow):
    # With the variance floor alpha > 0, every one of these is a valid model.
    X = _NAMED[name]
    model = _fit_or_refuse(_FLOWS[flow], X)
    assert model is not None, name
    _check_finite(model, X)


@pytest.mark.parametrize("flow", sorted(_FLOWS))
@pytest.mark.parametrize("X", [
    _rng.normal(size=(40, 3)) * 1e300,
    _rng.normal(size=(40, 3)) * 1e150,  # squares fit, but without 1/eps of headroom
    np.array([[1e300, 0.0], [-1e300, 1.0], [5e299, 2.0]]),
    np.array([[1e308, 0.0], [-1e308, 1.0], [1e308, 2.0]]),  # the mean overflows
], ids=["1e300", "1e150", "spread 1e300", "mean overflows"])
def test_values_near_the_float64_limit_are_refused(X, flow):
    with pytest.raises(ValueError, match="values of X are too large.*Rescale X"):
        _fit_or_refuse_strict(_FLOWS[flow], X)


def _fit_or_refuse_strict(params, X):
    with mock.patch.object(flowpca.density._fitting, "train_flow") as training:
        try:
            return NormalizingFlowPCA(random_state=0, **params).fit(X)
        finally:
            assert training.call_count == 0


@pytest.mark.parametrize("flow", sorted(_FLOWS))
@pytest.mark.parametrize("X", [
    np.c_[_rng.normal(size=(40, 2)), np.full(40, 3.0)],
    np.ones((10, 3)),
    _rng.normal(size=(2, 3)),  # two points span a line
], ids=["constant column", "all rows equal", "two samples in 3-D"])
def test_singular_covariance_without_floor_is_refused(X, flow):
    with pytest.raises(ValueError, match="covariance of X is singular.*alpha > 0"):
        _fit_or_refuse_strict(dict(_FLOWS[flow], alpha=0.0), X)


def test_float32_model_has_its_own_limit():
    X = _rng.normal(size=(40, 3)) * 1e20  # fine in float64, overflows float32 squares
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _check_finite(NormalizingFlowPCA(n_layers=2, max_iter=3, random_state=0,
                                         flow="mlp").fit(X), X)
    with pytest.raises(ValueError, match="too large for a float32 model"):
        _fit_or_refuse_strict(dict(_FLOWS["mlp"], dtype="float32"), X)


@pytest.mark.parametrize("flow, flow_params, message", [
    ("mlp", {"hidden_layer_sizes": 3},
     r"does not accept.*\['hidden_scale', 'lipschitz', 'noise_scale'\]"),
    ("linear", {"anything": 1}, r"flow='linear' does not accept"),
    (flowpca.flows.LinearFlow(3), {}, "flow_params applies to a flow family given by name"),
])
def test_bad_flow_params_are_refused_and_change_nothing(flow, flow_params, message):
    X = np.random.default_rng(0).normal(size=(30, 3))
    model = NormalizingFlowPCA(flow=flow, flow_params=flow_params, max_iter=2, early_stopping=False,
        **PAPER_TRAINING)
    params_before = model.get_params()
    with pytest.raises(ValueError, match=message):
        model.fit(X)
    assert not hasattr(model, "flow_")
    assert model.get_params().keys() == params_before.keys()


def test_flow_params_reach_the_mlp_initialization():
    X = np.random.default_rng(0).normal(size=(50, 3))
    outputs = [NormalizingFlowPCA(flow_params={"noise_scale": scale}, max_iter=1,
                                  random_state=0, flow="mlp").fit(X).transform(X)
               for scale in (0.0, 0.3)]
    assert not np.allclose(outputs[0], outputs[1])


def test_dataframe_fit_of_a_nonlinear_flow_raises_no_feature_name_warning():
    import pandas
    X = pandas.DataFrame(np.random.default_rng(0).normal(size=(40, 3)),
                         columns=["a", "b", "c"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = NormalizingFlowPCA(n_components=2, max_iter=3, random_state=0, flow="mlp").fit(X)
        model.transform(X)
    assert not [w for w in caught if "feature names" in str(w.message)]
    assert list(model.get_feature_names_out()) == ["flowpca0", "flowpca1"]
