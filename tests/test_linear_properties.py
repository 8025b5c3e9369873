"""Property tests of the linear flow over shapes, scales and seeds."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import special_ortho_group

from flowpca import NormalizingFlowPCA

from .conftest import anisotropic_gaussian


@st.composite
def gaussian_data(draw):
    n_features = draw(st.integers(1, 6))
    n_samples = draw(st.integers(n_features + 5, 60))
    seed = draw(st.integers(0, 2**16))
    log_scale = draw(st.floats(-3, 3))
    # Distinct variances keep the eigenvectors well defined.
    scale = 10.0**log_scale * np.geomspace(4.0, 0.5, n_features)
    return anisotropic_gaussian(n_samples, n_features, seed=seed, scale=scale), seed


@settings(max_examples=40, deadline=None)
@given(gaussian_data())
def test_round_trip_with_all_components(data):
    X, _ = data
    model = NormalizingFlowPCA(flow="linear", alpha=1e-3 * X.var()).fit(X)
    np.testing.assert_allclose(model.inverse_transform(model.transform(X)), X,
                               atol=1e-9 * np.abs(X).max())


@settings(max_examples=40, deadline=None)
@given(gaussian_data(), st.floats(-1e3, 1e3))
def test_log_likelihood_invariant_to_shift(data, shift):
    X, seed = data
    offset = shift * np.random.RandomState(seed).normal(size=X.shape[1])
    model = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X)
    shifted = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X + offset)
    tolerance = 1e-9 * (1 + np.abs(X + offset).max() ** 2 / X.var())
    np.testing.assert_allclose(shifted.score_samples(X + offset), model.score_samples(X),
                               atol=tolerance)
    np.testing.assert_allclose(shifted.mean_, model.mean_ + offset,
                               atol=1e-12 * (1 + np.abs(offset).max()))


@settings(max_examples=40, deadline=None)
@given(gaussian_data())
def test_rotation_equivariance(data):
    """Rotating the data rotates the components and leaves variances, projections (up to
    each component's sign) and log-likelihoods unchanged."""
    X, seed = data
    n_features = X.shape[1]
    rotation = special_ortho_group.rvs(n_features, random_state=seed) if n_features > 1 \
        else np.eye(1)
    model = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X)
    rotated = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X @ rotation.T)

    np.testing.assert_allclose(rotated.explained_variance_, model.explained_variance_,
                               rtol=1e-8)
    signs = np.sign(np.sum(rotated.components_ * (model.components_ @ rotation.T), axis=1))
    np.testing.assert_allclose(rotated.components_, signs[:, None] *
                               (model.components_ @ rotation.T), atol=1e-6)
    np.testing.assert_allclose(rotated.transform(X @ rotation.T),
                               model.transform(X) * signs, atol=1e-6 * np.abs(X).max())
    np.testing.assert_allclose(rotated.score_samples(X @ rotation.T),
                               model.score_samples(X), rtol=1e-8, atol=1e-8)
