"""Integrated components (`component_map='integrated'`, `flowpca.components._integration`)."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.stats import spearmanr

from flowpca import NormalizingFlowPCA
from flowpca.components import _integration, _orientation
from flowpca.datasets import make_s_curve_gaussian, make_sine_wave

from .conftest import PAPER_TRAINING


def _orthonormal_rows(rng, k, n_features):
    q, _ = np.linalg.qr(rng.normal(size=(n_features, n_features)))
    return q[:k]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_points=st.integers(1, 60),
       n_features=st.integers(1, 5), data=st.data())
def test_constant_frame_integrates_to_the_projection(seed, n_points, n_features, data):
    # A linear flow's frame is the same everywhere: the integrated components are
    # exactly V x (PCA's transform), at the reference points and at new points.
    k = data.draw(st.integers(1, n_features))
    rng = np.random.default_rng(seed)
    frame = _orthonormal_rows(rng, k, n_features)
    points = rng.normal(size=(n_points, n_features)) * rng.uniform(0.1, 10)
    directions = np.broadcast_to(frame, (n_points, k, n_features)).copy()
    values = _integration.integrate_reference_frame(
        points, directions, _orientation.reference_graph(points))
    np.testing.assert_allclose(values, points @ frame.T, atol=1e-9 * (1 + np.abs(points).max()))
    new = torch.as_tensor(rng.normal(size=(7, n_features)))
    reference = torch.as_tensor(points)
    extended = _integration.extend(
        new, torch.as_tensor(frame).expand(7, -1, -1), torch.cdist(new, reference),
        reference, torch.as_tensor(directions), torch.as_tensor(values))
    np.testing.assert_allclose(extended.numpy(), new.numpy() @ frame.T,
                               atol=1e-9 * (1 + np.abs(points).max()))


def _circle(angle):
    points = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    tangent = np.stack([-np.sin(angle), np.cos(angle)], axis=1)
    return points, tangent[:, None, :]


def test_tangent_frame_integrates_to_arc_length():
    # On a circle of radius 1 with the tangent as frame, c is the angle (arc length)
    # up to a constant; the midpoint rule's error per edge is O(edge^3).
    rng = np.random.default_rng(0)
    angle = np.sort(rng.uniform(0.0, 1.5 * np.pi, 300))
    points, frame = _circle(angle)
    values = _integration.integrate_reference_frame(
        points, frame, _orientation.reference_graph(points))[:, 0]
    error = (values - values.mean()) - (angle - angle.mean())
    assert np.abs(error).max() < 1e-3 * (angle.max() - angle.min())


def test_extension_is_continuous_and_matches_the_arc():
    rng = np.random.default_rng(1)
    angle = np.sort(rng.uniform(0.0, np.pi, 200))
    points, frame = _circle(angle)
    values = _integration.integrate_reference_frame(
        points, frame, _orientation.reference_graph(points))
    step = 1e-4
    path_angle = np.arange(0.2, np.pi - 0.2, step)
    path, path_frame = _circle(path_angle)
    path = path * 1.01  # slightly off the reference circle

    def extended(point_values):
        reference = torch.as_tensor(points)
        return _integration.extend(
            torch.as_tensor(path), torch.as_tensor(path_frame),
            torch.cdist(torch.as_tensor(path), reference), reference,
            torch.as_tensor(frame), torch.as_tensor(point_values))[:, 0].numpy()

    error = (extended(values) - extended(values).mean()) \
        - 1.01 * (path_angle - path_angle.mean())
    assert np.abs(error).max() < 0.02
    # Continuous even where the reference values disagree with each other (noise of
    # 0.01): extending from the nearest reference point alone jumps by ~0.01 (556 steps'
    # worth) where it changes; the blend changes by at most ~7 times the step.
    noisy = extended(values + rng.normal(0.0, 0.01, values.shape))
    assert np.abs(np.diff(noisy)).max() < 20 * step


def test_auto_is_integrated_for_zuko_flows_only():
    pytest.importorskip("zuko")
    X, _ = make_sine_wave(120, random_state=0)
    small = dict(n_layers=1, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nsf = NormalizingFlowPCA(flow="nsf", flow_params={"hidden_features": (8,)},
                                 **small).fit(X)
        nsf_projected = NormalizingFlowPCA(flow="nsf", component_map="projected",
                                           flow_params={"hidden_features": (8,)},
                                           **small).fit(X)
        mlp = NormalizingFlowPCA(flow="mlp", **small).fit(X)
        mlp_integrated = NormalizingFlowPCA(flow="mlp", component_map="integrated",
                                            **small).fit(X)
    assert nsf._component_map.name == "integrated"
    assert mlp._component_map.name == "projected"
    assert nsf_projected._component_map.name == "projected"
    assert mlp_integrated._component_map.name == "integrated"
    # Same flow, same local directions: only the component values differ.
    np.testing.assert_array_equal(nsf.local_directions(X), nsf_projected.local_directions(X))
    assert not np.allclose(nsf.transform(X), nsf_projected.transform(X))


def test_linear_flow_ignores_the_component_map():
    X, _ = make_sine_wave(100, random_state=0)
    projected = NormalizingFlowPCA(flow="linear", component_map="projected").fit(X)
    integrated = NormalizingFlowPCA(flow="linear", component_map="integrated").fit(X)
    np.testing.assert_array_equal(integrated.transform(X), projected.transform(X))


@pytest.fixture(scope="module")
def integrated_sine():
    X, latent = make_sine_wave(1500, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NormalizingFlowPCA(component_map="integrated", n_layers=4, max_iter=150,
                                   random_state=0, flow="mlp").fit(X[:1000])
    return model, X[1000:], latent[1000:]


def test_integrated_mlp_components_recover_the_sine_factors(integrated_sine):
    model, X, latent = integrated_sine
    Y = model.transform(X)
    rho = [abs(spearmanr(Y[:, i], latent[:, i])[0]) for i in range(2)]
    assert min(rho) >= 0.95, rho


def test_integrated_round_trip_with_all_components(integrated_sine):
    model, X, _ = integrated_sine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X_back = model.inverse_transform(model.transform(X[:200]))
    close = np.linalg.norm(X_back - X[:200], axis=1) <= 1e-4 * np.linalg.norm(X[:200], axis=1)
    assert close.mean() >= 0.99, close.mean()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_nsf_components_recover_the_paper_s_curve(seed):
    # The paper's S-curve (docs/contributing.rst, "The paper's data sets"): the spline
    # flow's projected components bend (|rho| 0.3-0.4 for t), its integrated ones (the
    # default for 'nsf') follow t and the height.
    pytest.importorskip("zuko")
    X, latent = make_s_curve_gaussian(2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NormalizingFlowPCA(3, flow="nsf", n_layers=3, max_iter=100,
                                   early_stopping=True, random_state=seed,
                                   **PAPER_TRAINING).fit(X[:1000])
    Y = model.transform(X[1000:])
    rho = [abs(spearmanr(Y[:, i], latent[1000:, i])[0]) for i in range(2)]
    assert min(rho) >= 0.95, rho
