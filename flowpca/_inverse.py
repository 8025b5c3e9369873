"""Solve ``components(x) = y_hat`` for ``x``: the nonlinear ``inverse_transform``.

The map ``x -> S(x)^-1 U(x)^T f(x)`` has no closed-form inverse when the local frame
varies with ``x``. We solve it per point by Levenberg-Marquardt on the residual
``r(x) = components(x) - y_hat``, with the residual's Jacobian by central differences
(``2 D`` evaluations per iteration: practical up to a few hundred features), starting
from the linear (PCA) solution.
"""

import torch

from . import _linalg


def _jacobian_fd(residual, x, rows):
    n, D = x.shape
    step = 1e-6 * (1.0 + x.abs())
    columns = []
    for j in range(D):
        e = torch.zeros_like(x)
        e[:, j] = step[:, j]
        columns.append((residual(x + e, rows) - residual(x - e, rows))
                       / (2 * step[:, j:j + 1]))
    return torch.stack(columns, dim=-1)  # (n, D_out, D_in)


def levenberg_marquardt(residual, x0, tol=1e-8, max_iter=100):
    """Minimize ``||residual(x)||`` row by row.

    Parameters
    ----------
    residual : callable
        ``residual(x, rows)`` maps points ``x`` (one per index in ``rows``, a tensor of
        row indices into ``x0``) to their residuals, shape ``(len(rows), D)``.
    x0 : torch.Tensor of shape (n, D)
        Starting points.
    tol : float
        A row has converged when its residual norm is below ``tol``.
    max_iter : int
        Iterations at most.

    Returns
    -------
    x : torch.Tensor of shape (n, D)
    residual_norm : torch.Tensor of shape (n,)
    """
    x = x0.clone()
    r = residual(x, torch.arange(x.shape[0], device=x.device))
    norm = r.norm(dim=1)
    damping = torch.full_like(norm, 1e-3)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    for _ in range(max_iter):
        active = norm > tol
        if not active.any():
            break
        index = active.nonzero().squeeze(1)
        xa, ra = x[index], r[index]
        J = _jacobian_fd(residual, xa, index)
        JtJ = J.transpose(1, 2) @ J
        scaled = JtJ + damping[active, None, None] * (
            torch.diagonal(JtJ, dim1=1, dim2=2).unsqueeze(-1) * eye + 1e-12 * eye)
        rhs = -(J.transpose(1, 2) @ ra.unsqueeze(-1))
        step = _linalg.solve(scaled, rhs).squeeze(-1)
        candidate = xa + step
        r_candidate = residual(candidate, index)
        norm_candidate = r_candidate.norm(dim=1)
        better = torch.isfinite(norm_candidate) & (norm_candidate < norm[active])
        accepted, rejected = index[better], index[~better]
        x[accepted] = candidate[better]
        r[accepted] = r_candidate[better]
        norm[accepted] = norm_candidate[better]
        damping[accepted] = (damping[accepted] / 3).clamp_min(1e-12)
        damping[rejected] = (damping[rejected] * 4).clamp_max(1e12)
    return x, norm
