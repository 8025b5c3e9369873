"""The nonlinear inverse_transform's solvers on analytic maps."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpca.components import _inverse


def rotation(angle):
    """Rotation matrices in the first two coordinates of 3-D, one per angle."""
    c, s = torch.cos(angle), torch.sin(angle)
    R = torch.eye(3, dtype=angle.dtype).repeat(angle.shape[0], 1, 1)
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1] = c, -s, s, c
    return R


def turning_frame(twist):
    """Components ``y(x) = R(twist |x|)^T x``: an orthogonal frame that turns with the
    distance from the origin, as a flow's local frame does along a curved manifold. The
    map is invertible (``|y| = |x|`` fixes the angle), and ``Vh = R^T`` is its frozen
    frame."""
    def evaluate(x, rows):
        Vh = rotation(twist * x.norm(dim=1)).transpose(1, 2)
        return (Vh @ x.unsqueeze(-1)).squeeze(-1), Vh
    return evaluate


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), twist=st.floats(0.0, 0.4))
def test_frame_broyden_inverts_a_turning_frame(seed, twist):
    x_true = torch.randn(50, 3, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    components = turning_frame(twist)
    target = components(x_true, None)[0]

    def evaluate(x, rows):
        y, Vh = components(x, rows)
        return y - target[rows], Vh

    # Start from the frozen-frame solution at the origin (no turn): x0 = target.
    x, norm = _inverse.frame_broyden(evaluate, target.clone(), tol=1e-10, max_iter=100)
    assert torch.all(norm <= 1e-10)
    torch.testing.assert_close(x, x_true, rtol=0, atol=1e-8)


def test_frame_broyden_is_exact_in_one_step_for_a_fixed_frame():
    Vh = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64))[0].expand(10, 3, 3)
    target = torch.randn(10, 3, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    calls = []

    def evaluate(x, rows):
        calls.append(len(rows))
        return (Vh[rows] @ x.unsqueeze(-1)).squeeze(-1) - target[rows], Vh[rows]

    x, norm = _inverse.frame_broyden(evaluate, torch.zeros(10, 3, dtype=torch.float64))
    assert torch.all(norm <= 1e-12)
    assert calls == [10, 10]  # the start and one step
