"""Component identity and sign tracking (`flowpca.components._orientation`) on known frames."""

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from flowpca.components import _orientation


def _arc(n=200, turn=np.pi):
    """Points on a half circle in the (x, z) plane, each with its frame (tangent,
    height, normal) as rows."""
    angle = np.linspace(0.0, turn, n)
    points = np.stack([np.sin(angle), np.zeros(n), -np.cos(angle)], axis=1)
    tangent = np.stack([np.cos(angle), np.zeros(n), np.sin(angle)], axis=1)
    height = np.tile([0.0, 1.0, 0.0], (n, 1))
    normal = np.cross(tangent, height)
    return points, np.stack([tangent, height, normal], axis=1)


def _scramble(frames, rng, swap):
    """Each point's frame rows with random signs, and the first two rows swapped where
    ``swap`` (a change of rank by local variance)."""
    out = frames * rng.choice([-1.0, 1.0], size=frames.shape[:2])[..., None]
    out[swap, :2] = out[swap][:, [1, 0]]
    return out


def _agreement(field, truth):
    """Per component: the smallest |cos| with the truth, and whether the signs agree
    everywhere (all the same way)."""
    cos = np.einsum("nkd,nkd->nk", field, truth)
    same_sign = np.all(cos > 0, axis=0) | np.all(cos < 0, axis=0)
    return np.abs(cos).min(axis=0), same_sign


def test_rank_swap_keeps_component_identity():
    # Past the middle of the arc the variance across it exceeds the variance along it:
    # the tracked components must keep following the tangent and the height.
    points, truth = _arc()
    swap = np.arange(len(points)) > len(points) // 2
    candidates = _scramble(truth, np.random.default_rng(0), swap)
    field = _orientation.track_reference_field(points, candidates, n_components=2)
    smallest_cos, same_sign = _agreement(field, truth[:, :2])
    np.testing.assert_allclose(smallest_cos, 1.0, atol=1e-12)
    assert same_sign.all()


def _avoided_crossing(n=300, start=100, stop=140):
    """Candidates on the arc whose two leading directions rotate by 90 degrees within
    their span over ``[start, stop)``, where their local variances nearly coincide (as
    an SVD's do at an avoided crossing): afterwards the first candidate is the height."""
    points, truth = _arc(n)
    tangent, height = truth[:, 0], truth[:, 1]
    phi = np.clip((np.arange(n) - start) / (stop - start), 0.0, 1.0)[:, None] * np.pi / 2
    candidates = truth.copy()
    candidates[:, 0] = np.cos(phi) * tangent + np.sin(phi) * height
    candidates[:, 1] = -np.sin(phi) * tangent + np.cos(phi) * height
    variances = np.tile([2.0, 1.0, 0.01], (n, 1))
    variances[start:stop, 0] = 1.05
    return points, candidates, variances, truth


def test_avoided_crossing_keeps_component_identity():
    points, candidates, variances, truth = _avoided_crossing()
    outside = np.r_[0:100, 140:300]
    field = _orientation.track_reference_field(points, candidates, 2, variances)
    smallest_cos, same_sign = _agreement(field[outside], truth[outside, :2])
    np.testing.assert_allclose(smallest_cos, 1.0, atol=1e-12)
    assert same_sign.all()
    # Step-by-step matching (no variances) follows the rotation and swaps them.
    plain = _orientation.track_reference_field(points, candidates, 2)
    np.testing.assert_allclose(np.abs(np.einsum("nd,nd->n", plain[200:, 0], truth[200:, 1])),
                               1.0, atol=1e-12)


def test_new_points_are_matched_to_their_reference():
    points, truth = _arc()
    swap = np.arange(len(points)) % 3 == 0
    rng = np.random.default_rng(1)
    field = _orientation.track_reference_field(
        points, _scramble(truth, rng, swap), n_components=3)
    candidates = torch.as_tensor(_scramble(truth, rng, ~swap))
    index, signs = _orientation.match_to_reference(candidates, torch.as_tensor(field))
    matched = candidates.gather(1, index.unsqueeze(-1).expand(-1, -1, 3)) * signs[..., None]
    np.testing.assert_allclose(matched.numpy(), field, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), turn=st.floats(0.1, 1.5 * np.pi),
       n_components=st.integers(1, 3))
def test_tracking_ignores_candidate_order_and_signs(seed, turn, n_components):
    # Whatever the per-point order (by local variance) and signs of the candidates,
    # the tracked field is the true frame up to one sign per component.
    points, truth = _arc(turn=turn)
    rng = np.random.default_rng(seed)
    candidates = _scramble(truth, rng, rng.random(len(points)) < 0.5)
    field = _orientation.track_reference_field(points, candidates, n_components)
    # Components are identified with the true frame's rows at the root (the point
    # nearest the origin); from there on they must agree everywhere.
    root = np.argmin(np.linalg.norm(points, axis=1))
    order = np.abs(field[root] @ truth[root].T).argmax(axis=1)
    smallest_cos, same_sign = _agreement(field, truth[:, order])
    np.testing.assert_allclose(smallest_cos, 1.0, atol=1e-12)
    assert same_sign.all()
