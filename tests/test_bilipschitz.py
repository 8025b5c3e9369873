"""Bi-Lipschitz MLP flow: every layer's singular values in [1/L, L], stable alpha=0 fits."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from flowpca import NormalizingFlowPCA
from flowpca.datasets import make_curve_2d, make_embedded_plane
from flowpca.exceptions import DegenerateFitWarning
from flowpca.flows import BiLipschitzMLPFlow, MLPFlow
from flowpca.exceptions import TrainingDivergedWarning


def _layer_singular_values(flow):
    return torch.linalg.svdvals(torch.stack(tuple(flow.weights)))


@settings(max_examples=20, deadline=None)
@given(lipschitz=st.floats(1.01, 50.0), seed=st.integers(0, 2**16),
       n_features=st.integers(1, 4), n_layers=st.integers(0, 3))
def test_any_parameters_give_singular_values_inside_the_bound(lipschitz, seed, n_features,
                                                              n_layers):
    flow = BiLipschitzMLPFlow(n_features, n_layers=n_layers, lipschitz=lipschitz)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.copy_(10 * torch.randn(parameter.shape, generator=generator,
                                             dtype=parameter.dtype))
    with torch.no_grad():
        s, scales = _layer_singular_values(flow), flow.singular_values()
    tolerance = 1e-9 * lipschitz
    assert s.max() <= lipschitz + tolerance and s.min() >= 1 / lipschitz - tolerance
    # The parametrization's scales are the singular values.
    torch.testing.assert_close(s.sort(dim=1).values, scales.sort(dim=1).values, rtol=1e-9,
                               atol=0)


def test_flow_contract_is_that_of_the_mlp_with_the_same_weights():
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flow = BiLipschitzMLPFlow.from_data(X, 1e-3, n_layers=2, lipschitz=3.0)
    plain = MLPFlow(3, n_layers=2)
    with torch.no_grad():
        for target, source in zip(plain.weights, flow.weights):
            target.copy_(source)
        for target, source in zip(plain.biases, flow.biases):
            target.copy_(source)
        y, log_det = flow(X)
        y_plain, log_det_plain = plain(X)
    torch.testing.assert_close(y, y_plain)
    torch.testing.assert_close(log_det, log_det_plain)
    torch.testing.assert_close(flow.inverse(y), X)
    # log|det W_l| is the sum of the log scales.
    torch.testing.assert_close(
        torch.linalg.slogdet(torch.stack(tuple(flow.weights)))[1],
        flow.singular_values().log().sum(dim=1))


def _fit(X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", TrainingDivergedWarning)
        warnings.simplefilter("error", DegenerateFitWarning)
        return NormalizingFlowPCA(random_state=0, **{"flow": "mlp", **kwargs}).fit(X)


def test_appendix_a_plane_trains_at_alpha_zero_with_the_bound():
    X, _ = make_embedded_plane(300, random_state=0)
    with pytest.raises(ValueError, match="singular"):
        NormalizingFlowPCA(alpha=0, n_layers=2, flow="mlp").fit(X)  # unbounded likelihood
    lipschitz, n_layers = 2.0, 2
    model = _fit(X, alpha=0, n_layers=n_layers, max_iter=40,
                 flow_params={"lipschitz": lipschitz})
    s = _layer_singular_values(model.flow_)
    assert s.max() <= lipschitz * (1 + 1e-9) and s.min() >= (1 - 1e-9) / lipschitz
    assert np.isfinite(model.loss_curve_).all() and np.isfinite(model.score(X))
    # |J| <= L^(layers) (asinh slopes <= 1): the local variances stay above L^-2(layers).
    variances = model.local_variances(X)
    assert variances.min() >= lipschitz ** (-2 * (n_layers + 1)) * (1 - 1e-9)


def test_appendix_a_curve_trains_at_alpha_zero_with_the_bound():
    X, _ = make_curve_2d(300, random_state=0)
    lipschitz, n_layers = 2.0, 6  # the paper's 6 hidden layers of 2 units
    model = _fit(X, alpha=0, n_layers=n_layers, max_iter=40,
                 flow_params={"lipschitz": lipschitz})
    s = _layer_singular_values(model.flow_)
    assert s.max() <= lipschitz * (1 + 1e-9) and s.min() >= (1 - 1e-9) / lipschitz
    assert np.isfinite(model.loss_curve_).all() and np.isfinite(model.score(X))
    restored = pickle.loads(pickle.dumps(model))
    assert isinstance(restored.flow_, BiLipschitzMLPFlow)
    np.testing.assert_array_equal(restored.score_samples(X), model.score_samples(X))


@pytest.mark.parametrize("lipschitz", [1.0, 0.5, -2.0, np.inf, "2", True])
def test_invalid_bound_raises_and_changes_nothing(lipschitz):
    X, _ = make_curve_2d(50, random_state=0)
    model = NormalizingFlowPCA(max_iter=1, flow_params={"lipschitz": lipschitz}, flow="mlp")
    with pytest.raises(ValueError, match="lipschitz must be a finite float > 1"):
        model.fit(X)
    assert not hasattr(model, "flow_")
