"""Checks of a flow's Flow-contract methods against its autograd Jacobian, shared by the
tests of the flow families."""

import torch


def assert_contract_matches_jacobian(flow, x, J, v, V, atol):
    """``forward``'s log-determinant, ``jacobian`` and ``jvp`` within ``atol`` of the
    autograd Jacobian ``J`` at ``x`` (``v``: vectors, ``(n, D)``); ``frobenius_sq`` and
    the inverse Jacobian operators (``V``: stacks of vectors, ``(n, q, D)``), whose values
    are products or inverses of it, within ``10 * atol``."""
    _, log_abs_det = flow(x)
    torch.testing.assert_close(log_abs_det, torch.linalg.slogdet(J)[1], rtol=0, atol=atol)
    torch.testing.assert_close(flow.jacobian(x), J, rtol=0, atol=atol)
    torch.testing.assert_close(flow.jvp(x, v)[1], (J @ v.unsqueeze(-1)).squeeze(-1),
                               rtol=0, atol=atol)
    torch.testing.assert_close(flow.frobenius_sq(x), J.pow(2).sum(dim=(1, 2)), rtol=0,
                               atol=10 * atol)
    apply_inverse, apply_inverse_transpose = flow.inverse_jacobian_operators(x)
    torch.testing.assert_close(apply_inverse(V) @ J.transpose(1, 2), V, rtol=0,
                               atol=10 * atol)
    torch.testing.assert_close(apply_inverse_transpose(V) @ J, V, rtol=0, atol=10 * atol)


def penalized_nll_from_jacobian(flow, x, J, alpha):
    """The MLP flow's training objective from the autograd Jacobian ``J``: the mean of
    ``||f(x)||^2 / 2 - log|det J| + alpha / 2 ||J||_F^2``."""
    return (0.5 * flow(x)[0].pow(2).sum(dim=1) - torch.linalg.slogdet(J)[1]
            + 0.5 * alpha * J.pow(2).sum(dim=(1, 2))).mean()
