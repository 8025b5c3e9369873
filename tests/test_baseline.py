"""The linear flow's likelihood optimum in closed form, and the gain of fitted flows over it."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from flowpca import NormalizingFlowPCA
from flowpca.density import gaussian_baseline
from flowpca.datasets import make_embedded_plane, make_sine_wave

from .conftest import anisotropic_gaussian


@pytest.mark.parametrize("alpha", [0.0, 1e-4, 0.3])
def test_closed_form_matches_a_one_component_gaussian_mixture(alpha):
    X = anisotropic_gaussian(300, 4, seed=1)
    baseline = gaussian_baseline(X, alpha)
    # GaussianMixture's reg_covar adds alpha to the covariance's diagonal: the same model.
    mixture = GaussianMixture(1, reg_covar=alpha, random_state=0).fit(X)
    assert baseline.training_score() == pytest.approx(mixture.score(X), abs=1e-9)
    assert baseline.training_score() == pytest.approx(
        np.mean(baseline.score_samples(X)), abs=1e-10)
    X_new = anisotropic_gaussian(50, 4, seed=2)
    np.testing.assert_allclose(baseline.score_samples(X_new), mixture.score_samples(X_new),
                               atol=1e-9)


def test_subspace_baseline_is_the_density_of_the_projection():
    X = anisotropic_gaussian(400, 5, seed=3)
    baseline = gaussian_baseline(X, 1e-3, n_components=2)
    projected = (X - X.mean(axis=0)) @ baseline.directions.T
    mixture = GaussianMixture(1, reg_covar=1e-3, random_state=0).fit(projected)
    assert baseline.training_score() == pytest.approx(mixture.score(projected), abs=1e-9)


def test_singular_covariance_without_floor_is_unbounded():
    X, _ = make_embedded_plane(200, random_state=0)
    assert gaussian_baseline(X, 0.0).training_score() == np.inf
    assert np.isfinite(gaussian_baseline(X, 1e-4).training_score())


@settings(max_examples=25, deadline=None)
@given(n_samples=st.integers(5, 60), n_features=st.integers(1, 6),
       alpha=st.floats(1e-6, 10.0), seed=st.integers(0, 2**16))
def test_linear_flow_gains_nothing_over_its_own_optimum(n_samples, n_features, alpha, seed):
    X = anisotropic_gaussian(n_samples, n_features, seed=seed)
    model = NormalizingFlowPCA(flow="linear", alpha=alpha).fit(X)
    assert model.gaussian_baseline_score_ == pytest.approx(model.score(X), abs=1e-8)
    assert abs(model.gaussian_baseline_gain_) <= 1e-8
    assert model.validation_gaussian_baseline_gain_ is None


def test_mlp_gains_over_the_gaussian_on_the_sine_wave():
    X, _ = make_sine_wave(1000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NormalizingFlowPCA(flow="mlp", n_layers=4, max_iter=30, early_stopping=True,
                                   random_state=0).fit(X)
    assert model.gaussian_baseline_gain_ > 0.2
    assert model.validation_gaussian_baseline_gain_ > 0.2
    # The baseline is fitted on the training part (the 900 rows left by the split).
    assert model.gaussian_baseline_score_ != pytest.approx(
        gaussian_baseline(X, model.alpha_).training_score(), abs=1e-6)
