"""n_components='auto', intrinsic_dimension_ and local_intrinsic_dimension: the scale-free
gap rule (default) and the absolute threshold rule."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_swiss_roll
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from flowpca import NormalizingFlowPCA
from flowpca.components import intrinsic_dimension
from flowpca.datasets import make_embedded_plane, make_s_curve_gaussian, make_sine_wave

from .conftest import PAPER_TRAINING, anisotropic_gaussian


@parametrize_with_checks([
    NormalizingFlowPCA(n_components="auto", flow="linear"),
    NormalizingFlowPCA(n_components="auto", n_layers=1, max_iter=5,
                       intrinsic_dimension_threshold=10.0,
                       flow_params={"lipschitz": 3.0}, flow="mlp"),
])
def test_sklearn_compatible_with_auto_and_bounded_layers(estimator, check):
    check(estimator)


def test_rule_counts_variances_above_threshold_times_floor():
    variances = np.array([5.0, 0.2, 1.1e-3, 0.9e-3, 1e-5])
    assert intrinsic_dimension(variances, 1e-5, threshold=100) == 3
    assert intrinsic_dimension(variances, 1e-5, threshold=1e4) == 2
    assert intrinsic_dimension(variances, 1.0, threshold=2) == 1
    assert intrinsic_dimension(np.full(3, 1e-5), 1e-5, threshold=100) == 0
    # No floor: relative to the largest variance.
    assert intrinsic_dimension(np.array([1.0, 1e-3, 1e-15]), 0.0, threshold=100) == 2


@pytest.mark.parametrize("variances, expected", [
    ([4.0, 0.5, 1e-4], 2),             # gaps 2.1 and 8.5 (natural log): the surface
    ([4.0, 1e-3, 1e-4], 1),            # gaps 8.3 and 2.3 < 0.6 x 8.3: a curve
    ([4.0, 0.01, 1e-4], 2),            # gaps 6.0 and 4.6 >= 0.6 x 6.0: the later one
    ([1.0, 0.5, 0.3, 0.2], 4),         # no gap reaches a factor of 10: full dimension
    ([1.0, 1e-6, 1e-6, 1e-6, 1e-6], 1),
    ([2.0], 1),
    ([1.0, 0.0, 0.0], 1),              # exact zeros (clipped at 1e-12 x the largest)
])
def test_gap_rule_on_analytic_spectra(variances, expected):
    assert intrinsic_dimension(variances, alpha=0.0) == expected
    assert intrinsic_dimension(variances, alpha=0.5) == expected  # alpha plays no part


@settings(max_examples=50, deadline=None)
@given(log_variances=st.lists(st.floats(-20, 5), min_size=1, max_size=12),
       log_scale=st.floats(-30, 30), seed=st.integers(0, 2**16))
def test_gap_rule_is_scale_free_order_free_and_per_row(log_variances, log_scale, seed):
    variances = np.exp(np.array(log_variances))
    expected = intrinsic_dimension(variances, 0.0)
    assert 1 <= expected <= variances.size
    shuffled = np.random.RandomState(seed).permutation(variances)
    assert intrinsic_dimension(shuffled * np.exp(log_scale), 0.0) == expected
    rows = np.stack([variances, np.full(variances.size, 1.0), shuffled])
    assert intrinsic_dimension(rows, 0.0).tolist() == [expected, variances.size, expected]


@settings(max_examples=25, deadline=None)
@given(n_features=st.integers(1, 6), log_alpha=st.floats(-6, 0),
       threshold=st.floats(1.5, 1e3), seed=st.integers(0, 2**16))
def test_linear_flow_counts_pca_variances_above_the_floor(n_features, log_alpha, threshold,
                                                         seed):
    X = anisotropic_gaussian(50, n_features, seed=seed,
                             scale=np.logspace(0, -4, n_features))
    alpha = 10.0**log_alpha
    model = NormalizingFlowPCA(n_components="auto", flow="linear", alpha=alpha,
                               intrinsic_dimension_threshold=threshold).fit(X)
    pca_variances = PCA().fit(X).explained_variance_ * 49 / 50
    expected = int(np.sum(pca_variances + alpha > threshold * alpha))
    assert model.intrinsic_dimension_ == expected
    assert model.n_components_ == max(1, expected)
    assert model.transform(X).shape == (50, max(1, expected))


def test_every_fitted_model_has_the_attribute():
    X, _ = make_embedded_plane(100, random_state=0)
    for n_components in (None, 1, 0.5):
        model = NormalizingFlowPCA(n_components, flow="linear", alpha=1e-4).fit(X)
        assert model.intrinsic_dimension_ == 2


def test_plane_in_3d():
    X, _ = make_embedded_plane(300, random_state=0)
    linear = NormalizingFlowPCA("auto", flow="linear", alpha=1e-4).fit(X)
    assert linear.intrinsic_dimension_ == linear.n_components_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = NormalizingFlowPCA("auto", n_layers=2, max_iter=20, random_state=0, flow="mlp").fit(X)
    assert mlp.intrinsic_dimension_ == mlp.n_components_ == 2


def test_linear_subspace_with_noise_below_the_floor():
    rng = np.random.RandomState(0)
    basis, _ = np.linalg.qr(rng.normal(size=(20, 5)))
    X = rng.normal(size=(400, 5)) @ basis.T + 3e-3 * rng.normal(size=(400, 20))
    model = NormalizingFlowPCA("auto", flow="linear", alpha=1e-4).fit(X)  # noise 9e-6
    assert model.intrinsic_dimension_ == model.n_components_ == 5
    assert model.transform(X).shape == (400, 5)


def _curve_with_tiny_noise(n_samples, random_state):
    rng = np.random.RandomState(random_state)
    t = rng.normal(size=n_samples)
    return np.column_stack([t, np.sin(t)]) + 1e-3 * rng.normal(size=(n_samples, 2))


@pytest.mark.slow
@pytest.mark.parametrize("make, expected", [
    (_curve_with_tiny_noise, 1),
    (lambda n, random_state: make_sine_wave(n, random_state=random_state)[0], 2),
    (lambda n, random_state: make_s_curve_gaussian(n, random_state=random_state)[0], 2),
], ids=["sin-curve-2d", "sine-wave-3d", "s-curve-3d"])
def test_mlp_finds_the_manifold_dimension(make, expected):
    X = make(500, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NormalizingFlowPCA("auto", max_iter=300, random_state=0, flow="mlp").fit(X)
    assert model.intrinsic_dimension_ == model.n_components_ == expected


@pytest.mark.slow
def test_spline_flow_finds_the_swiss_roll_sheet():
    """The noise-free swiss roll (standardized) is a 2-D sheet. The asinh MLP does not
    unroll it (2 000 points, 823 epochs: mean local variances 1.24 / 1.01 / 0.87, all
    three components counted), the spline flow does: typical third variance 22 / 12
    alpha (seeds 0 / 1, 1 000 points, 300 epochs; 5-6 alpha with 2 000 points) against
    ~1e4 alpha for the sheet's second direction and a threshold of 100 alpha."""
    X, _ = make_swiss_roll(1000, noise=0.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NormalizingFlowPCA("auto", flow="nsf", n_layers=3, max_iter=300,
                                   early_stopping=True, random_state=0, **PAPER_TRAINING).fit(X)
    assert model.intrinsic_dimension_ == model.n_components_ == 2


@pytest.mark.parametrize("threshold", [1.0, 0.5, -3.0, "10"])
def test_invalid_threshold_raises(threshold):
    X, _ = make_embedded_plane(50, random_state=0)
    with pytest.raises(ValueError, match="intrinsic_dimension_threshold"):
        NormalizingFlowPCA(flow="linear", intrinsic_dimension_threshold=threshold).fit(X)


# ------------------------------------------------- the default estimator on untuned manifolds
# Small versions of benchmarks/manifolds.py's suite (noise-free, 500 points): none of them
# was used to choose the gap rule's constants (benchmarks/intrinsic_dimension.py chose
# them on the other half of the suite: the helix, the torus and the 3-sphere are in its
# test half; the sphere and the 3-ball in 10-D in its training half).
def _helix(n, rng):
    t = rng.uniform(0, 3 * np.pi, n)
    return np.column_stack([np.cos(t), np.sin(t), t / 3])


def _sphere(n, rng):
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _torus(n, rng):
    a, b = rng.uniform(0, 2 * np.pi, size=(2, n))
    return np.column_stack([(1 + 0.4 * np.cos(b)) * np.cos(a),
                            (1 + 0.4 * np.cos(b)) * np.sin(a), 0.4 * np.sin(b)])


def _ball_in_10d(n, rng):
    u = rng.normal(size=(n, 3))
    u *= rng.uniform(size=(n, 1)) ** (1 / 3) / np.linalg.norm(u, axis=1, keepdims=True)
    basis, _ = np.linalg.qr(rng.normal(size=(10, 3)))
    return u @ basis.T


@pytest.mark.slow
@pytest.mark.parametrize("make, expected", [
    (_helix, 1), (_sphere, 2), (_torus, 2), (_ball_in_10d, 3),
], ids=["helix", "sphere-3d", "torus-3d", "ball-3d-in-10d"])
def test_default_estimator_finds_the_dimension_of_untuned_manifolds(make, expected):
    X = make(500, np.random.RandomState(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NormalizingFlowPCA(n_components="auto", random_state=0).fit(X)
    assert model.intrinsic_dimension_ == model.n_components_ == expected
    # The spectrum it was read from: the gap after the manifold's components is the
    # widest one or at least 0.6 times it (the rule), and the attribute says so.
    log_spectrum = np.log(model.typical_local_variances_)
    gaps = log_spectrum[:-1] - log_spectrum[1:]
    assert gaps[expected - 1] >= 0.6 * gaps.max()
    # Point by point, the same answer on most of the data.
    assert np.mean(model.local_intrinsic_dimension(X[:200]) == expected) >= 0.8


def test_local_intrinsic_dimension_of_the_linear_flow_is_the_same_everywhere():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4)) * [3.0, 1.0, 0.5, 1e-3]
    model = NormalizingFlowPCA(flow="linear").fit(X)
    local = model.local_intrinsic_dimension(X[:50])
    assert local.shape == (50,) and local.dtype.kind == "i"
    assert np.all(local == model.intrinsic_dimension_) and model.intrinsic_dimension_ == 3
    absolute = NormalizingFlowPCA(flow="linear", alpha=1e-4,
                                  intrinsic_dimension_threshold=100.0).fit(X)
    assert absolute.intrinsic_dimension_ == 3
    assert np.all(absolute.local_intrinsic_dimension(X[:5]) == 3)
    with pytest.raises(ValueError, match="features"):
        model.local_intrinsic_dimension(X[:5, :3])
