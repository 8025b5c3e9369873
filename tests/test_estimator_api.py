"""scikit-learn conventions: estimator checks, pipelines, model selection, persistence,
validation of bad input."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from flowpca import NormalizingFlowPCA

from .conftest import anisotropic_gaussian

ESTIMATORS = [
    NormalizingFlowPCA(max_iter=3),  # the default family, its other settings 'auto'
    NormalizingFlowPCA(flow="mlp"),
    NormalizingFlowPCA(flow="linear"),
    NormalizingFlowPCA(flow="linear", solver="adam", max_iter=20),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


X_TRAIN = anisotropic_gaussian(200, 4, seed=0)
FITTED_KINDS = {
    "linear-exact": dict(flow="linear"),
    "linear-adam": dict(flow="linear", solver="adam", max_iter=30, learning_rate_init=1e-2),
}


@pytest.fixture(params=list(FITTED_KINDS))
def fitted(request):
    return NormalizingFlowPCA(random_state=0, **FITTED_KINDS[request.param]).fit(X_TRAIN)


def test_pipeline_with_scaler_and_pandas_output():
    frame = pd.DataFrame(X_TRAIN, columns=["a", "b", "c", "d"])
    pipeline = make_pipeline(StandardScaler(), NormalizingFlowPCA(n_components=2,
                                                                  flow="linear"))
    pipeline.set_output(transform="pandas")
    out = pipeline.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["flowpca0", "flowpca1"]
    model = pipeline[-1]
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c", "d"])
    assert np.isfinite(pipeline.score(frame))


def test_grid_search_over_alpha_uses_score():
    X = anisotropic_gaussian(120, 20, seed=3)  # few samples for the dimension
    search = GridSearchCV(NormalizingFlowPCA(flow="linear"),
                          {"alpha": [1e-6, 1e-2, 1e-1, 1.0]}, cv=3).fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    # The smallest alpha overfits the covariance of 80 points in 20 dimensions.
    assert search.best_params_["alpha"] > 1e-6
    # The CV score is the held-out mean log-likelihood, computed by our own score().
    best_alpha = search.best_params_["alpha"]
    manual = np.mean([NormalizingFlowPCA(flow="linear", alpha=best_alpha)
                      .fit(X[train]).score(X[test])
                      for train, test in KFold(n_splits=3).split(X)])
    assert search.best_score_ == pytest.approx(manual, rel=1e-12)


def test_clone_and_pickle_preserve_predictions(fitted):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(X_TRAIN), fitted.transform(X_TRAIN))
    np.testing.assert_array_equal(restored.score_samples(X_TRAIN),
                                  fitted.score_samples(X_TRAIN))
    np.testing.assert_array_equal(restored.sample(5), fitted.sample(5))
    refit = clone(fitted).fit(X_TRAIN)
    np.testing.assert_array_equal(refit.transform(X_TRAIN), fitted.transform(X_TRAIN))


def test_random_state_makes_everything_reproducible(fitted):
    params = fitted.get_params()
    again = NormalizingFlowPCA(**params).fit(X_TRAIN)
    np.testing.assert_array_equal(again.transform(X_TRAIN), fitted.transform(X_TRAIN))
    np.testing.assert_array_equal(again.score_samples(X_TRAIN),
                                  fitted.score_samples(X_TRAIN))
    np.testing.assert_array_equal(again.sample(10, random_state=3),
                                  fitted.sample(10, random_state=3))
    assert not np.array_equal(fitted.sample(10, random_state=3),
                              fitted.sample(10, random_state=4))


def test_samples_have_fitted_mean_and_covariance():
    model = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X_TRAIN)
    n = 20000
    samples = model.sample(n, random_state=0)
    covariance = model.components_.T @ np.diag(model.explained_variance_) @ \
        model.components_
    # Standard errors: mean sd/sqrt(n); covariance entries ~ sqrt(2/n) * var scale.
    scale = np.sqrt(np.diag(covariance))
    np.testing.assert_allclose(samples.mean(axis=0), model.mean_,
                               atol=5 * scale.max() / np.sqrt(n))
    np.testing.assert_allclose(np.cov(samples.T), covariance,
                               atol=5 * np.sqrt(2.0 / n) * scale.max() ** 2)


# ---------------------------------------------------------------- bad input
def _fitted_attributes(model):
    return {k: v for k, v in vars(model).items() if k.endswith("_")}


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected_and_changes_nothing(fitted, bad_value):
    before = fitted.transform(X_TRAIN)
    X_bad = X_TRAIN.copy()
    X_bad[3, 1] = bad_value
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.fit(X_bad)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.transform(X_bad)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.score_samples(X_bad)
    np.testing.assert_array_equal(fitted.transform(X_TRAIN), before)


def test_wrong_feature_count_is_rejected(fitted):
    with pytest.raises(ValueError, match="X has 3 features, but NormalizingFlowPCA is "
                                         "expecting 4 features"):
        fitted.transform(X_TRAIN[:, :3])
    with pytest.raises(ValueError, match="expects 4 components"):
        fitted.inverse_transform(np.zeros((2, 3)))


def test_unfitted_use_raises_not_fitted():
    model = NormalizingFlowPCA(flow="mlp")
    for method in (model.transform, model.score_samples, model.score,
                   model.inverse_transform):
        with pytest.raises(NotFittedError):
            method(X_TRAIN)
    with pytest.raises(NotFittedError):
        model.sample(3)


@pytest.mark.parametrize("params, match", [
    ({"alpha": -1.0}, "'alpha' parameter"),
    ({"flow": "banana"}, "'flow' parameter"),
    ({"n_components": 0}, "'n_components' parameter"),
    ({"n_components": 1.5}, "'n_components' parameter"),
    ({"solver": "lbfgs"}, "'solver' parameter"),
    ({"max_iter": 0}, "'max_iter' parameter"),
    ({"learning_rate_init": 0.0}, "'learning_rate_init' parameter"),
    ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
    ({"dtype": "float16"}, "'dtype' parameter"),
    ({"n_components": 5}, "n_components=5 must be between 1 and n_features=4"),
    ({"device": "cuda:7"} , "CUDA is not available|device"),
])
def test_invalid_parameters_are_rejected_and_change_nothing(fitted, params, match):
    before = _fitted_attributes(fitted)
    before_Y = fitted.transform(X_TRAIN)
    bad = fitted.set_params(**params)
    with pytest.raises(ValueError, match=match):
        bad.fit(X_TRAIN)
    assert _fitted_attributes(bad).keys() == before.keys()
    for name, value in before.items():
        assert getattr(bad, name) is value
    np.testing.assert_array_equal(bad.transform(X_TRAIN), before_Y)


def test_exact_solver_needs_the_linear_flow():
    with pytest.raises(ValueError, match="solver='exact' is only available"):
        NormalizingFlowPCA(flow="mlp", solver="exact").fit(X_TRAIN)


@pytest.mark.parametrize("n_samples", [0, -1, 2.5])
def test_sample_count_must_be_positive(fitted, n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(n_samples)
