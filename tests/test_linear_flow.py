"""The linear flow is exactly PCA (docs/user_guide/theory.rst)."""

import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

from flowpca import NormalizingFlowPCA
from flowpca.exceptions import DegenerateFitWarning

from .conftest import anisotropic_gaussian

RTOL = 1e-8

DATASETS = {
    "tall": (anisotropic_gaussian(300, 4, seed=0), 1e-10),
    "square-ish": (anisotropic_gaussian(40, 12, seed=1), 1e-10),
    "wide": (anisotropic_gaussian(15, 30, seed=2), 1e-3),  # n < D: needs alpha > 0
    "one-feature": (anisotropic_gaussian(50, 1, seed=3), 1e-10),
}


@pytest.mark.parametrize("name", DATASETS)
def test_linear_flow_matches_pca(name):
    X, alpha = DATASETS[name]
    n_samples, n_features = X.shape
    rank = min(n_samples - 1, n_features)  # directions that carry data variance
    model = NormalizingFlowPCA(flow="linear", alpha=alpha).fit(X)
    pca = PCA(n_components=rank).fit(X)

    np.testing.assert_allclose(model.components_[:rank], pca.components_, rtol=RTOL,
                               atol=RTOL)
    np.testing.assert_allclose(model.explained_variance_[:rank],
                               pca.explained_variance_ * (n_samples - 1) / n_samples + alpha,
                               rtol=RTOL)
    np.testing.assert_allclose(model.explained_variance_[rank:], alpha, rtol=RTOL)
    Y = model.transform(X)
    np.testing.assert_allclose(Y[:, :rank], pca.transform(X), rtol=RTOL, atol=RTOL * 10)

    truncated = NormalizingFlowPCA(n_components=rank, flow="linear", alpha=alpha).fit(X)
    np.testing.assert_allclose(truncated.inverse_transform(truncated.transform(X)),
                               pca.inverse_transform(pca.transform(X)), rtol=RTOL,
                               atol=RTOL * 10)


@pytest.mark.parametrize("name", DATASETS)
def test_score_samples_is_gaussian_density(name):
    X, alpha = DATASETS[name]
    model = NormalizingFlowPCA(flow="linear", alpha=alpha).fit(X)
    covariance = np.cov(X.T, bias=True).reshape(X.shape[1], X.shape[1])
    covariance += alpha * np.eye(X.shape[1])
    expected = multivariate_normal(X.mean(axis=0), covariance).logpdf(X)
    np.testing.assert_allclose(model.score_samples(X), expected, rtol=1e-9)
    assert model.score(X) == pytest.approx(np.mean(expected), rel=1e-9)


def test_variance_ratio_selects_like_pca():
    X = anisotropic_gaussian(500, 6, seed=4)
    for fraction in (0.5, 0.8, 0.95, 0.999):
        model = NormalizingFlowPCA(n_components=fraction, flow="linear", alpha=1e-12).fit(X)
        pca = PCA(n_components=fraction, svd_solver="full").fit(X)
        assert model.n_components_ == pca.n_components_
        np.testing.assert_allclose(model.explained_variance_ratio_,
                                   pca.explained_variance_ratio_, rtol=1e-6)


def test_adam_converges_to_exact_solution():
    X = anisotropic_gaussian(500, 3, seed=5, scale=np.array([2.0, 1.0, 0.5]))
    exact = NormalizingFlowPCA(flow="linear", alpha=1e-4).fit(X)
    adam = NormalizingFlowPCA(flow="linear", solver="adam", alpha=1e-4, batch_size=500,
                              learning_rate_init=1e-2, max_iter=2000, tol=1e-10,
                              random_state=0).fit(X)
    np.testing.assert_allclose(adam.components_, exact.components_, atol=1e-3)
    assert adam.score(X) == pytest.approx(exact.score(X), abs=1e-3)  # nats per sample
    np.testing.assert_allclose(adam.score_samples(X), exact.score_samples(X), atol=1e-2)
    assert adam.n_iter_ == len(adam.loss_curve_) < 2000
    assert np.all(np.diff(adam.loss_curve_[-50:]) <= 1e-9)  # settled, not oscillating


def _embedded_plane(n_samples=500, seed=0):
    """Paper, Appendix A: a 2-D Gaussian embedded in 3-D (rank-deficient covariance)."""
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n_samples, 2)) @ np.array([[2.0, 1.0, 0.5], [0.0, 1.0, -1.0]])


def test_adam_with_tikhonov_recovers_embedded_plane():
    X = _embedded_plane()
    exact = NormalizingFlowPCA(flow="linear", alpha=1e-4).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        adam = NormalizingFlowPCA(flow="linear", solver="adam", alpha=1e-4, batch_size=500,
                                  learning_rate_init=5e-2, max_iter=4000, tol=1e-8,
                                  random_state=0).fit(X)
    np.testing.assert_allclose(adam.components_, exact.components_, atol=1e-3)
    np.testing.assert_allclose(adam.explained_variance_[:2], exact.explained_variance_[:2],
                               rtol=1e-3)
    # The off-plane variance settles at the alpha floor.
    assert adam.explained_variance_[2] == pytest.approx(1e-4, rel=0.25)


def test_unregularized_embedded_plane_does_not_settle_and_is_reported():
    X = _embedded_plane()
    with pytest.raises(ValueError, match="singular"):
        NormalizingFlowPCA(flow="linear", alpha=0.0).fit(X)

    def smallest_variance(max_iter):
        with pytest.warns(DegenerateFitWarning, match="unbounded"):
            model = NormalizingFlowPCA(flow="linear", solver="adam", alpha=0.0,
                                       batch_size=500, learning_rate_init=5e-2,
                                       max_iter=max_iter, random_state=0).fit(X)
        assert model.n_iter_ == max_iter  # it never converges
        return model.explained_variance_[2]

    short, long = smallest_variance(1000), smallest_variance(3000)
    assert long < short / 4  # the off-plane variance keeps shrinking towards zero
