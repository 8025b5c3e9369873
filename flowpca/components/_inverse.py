"""Solve ``components(x) = y_hat`` for ``x``: the nonlinear ``inverse_transform``.

The map ``x -> S(x)^-1 U(x)^T f(x)`` has no closed-form inverse when the local frame
varies with ``x``. We solve it per point in two stages on the residual
``r(x) = components(x) - y_hat``:

1. :func:`frame_broyden`: with the frame ``(U, S, V)`` held fixed, the components'
   Jacobian is ``S^-1 U^T J = V^T``, an orthogonal matrix, so ``x <- x - V r`` is a
   Newton step of the frozen-frame map; Broyden updates learn the frame's turning from
   the steps taken. One evaluation of the components per iteration, whatever ``D``.
2. :func:`levenberg_marquardt` for the points stage 1 leaves unconverged (where the frame
   turns fast), with the residual's Jacobian by central differences (``2 D``
   evaluations per iteration; the estimator uses it up to 16 features).
"""

import torch

from .. import _linalg


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


def frame_broyden(evaluate, x0, tol=1e-8, max_iter=100, max_halvings=10):
    """Quasi-Newton iteration from the frozen-frame Jacobian, with Broyden updates.

    The inverse Jacobian starts as ``V`` (the frozen-frame model, see the module
    docstring) and learns how the frame turns from the steps taken, by Broyden's "good"
    rank-one updates of the inverse (no linear solves). A step that does not decrease
    ``||r||`` is halved and the model is reset to the frozen frame at the current point.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x, rows)`` returns ``(r, Vh)`` at points ``x`` (one per index in
        ``rows``): residuals of shape ``(len(rows), D)`` and the local directions ``Vh``
        of shape ``(len(rows), D, D)``, row ``i`` the direction of component ``i``, signed
        like it.
    x0 : torch.Tensor of shape (n, D)
        Starting points.
    tol : float
        A row has converged when its residual norm is below ``tol``.
    max_iter : int
        Iterations at most.
    max_halvings : int
        A row whose step still does not decrease the residual after this many halvings
        stops (it is left to :func:`levenberg_marquardt`).

    Returns
    -------
    x : torch.Tensor of shape (n, D)
    residual_norm : torch.Tensor of shape (n,)
    """
    x = x0.clone()
    r, Vh = evaluate(x, torch.arange(x.shape[0], device=x.device))
    H = Vh.transpose(1, 2).clone()  # model of the inverse Jacobian of r
    norm = r.norm(dim=1)
    step_size = torch.ones_like(norm)
    stalled = torch.zeros_like(norm, dtype=torch.bool)
    for _ in range(max_iter):
        active = (norm > tol) & ~stalled
        if not active.any():
            break
        index = active.nonzero().squeeze(1)
        dx = -step_size[index, None] * (H[index] @ r[index].unsqueeze(-1)).squeeze(-1)
        candidate = x[index] + dx
        r_candidate, Vh_candidate = evaluate(candidate, index)
        norm_candidate = r_candidate.norm(dim=1)
        better = torch.isfinite(norm_candidate) & (norm_candidate < norm[index])
        accepted, rejected = index[better], index[~better]
        # Good Broyden update of the inverse: H += (dx - H dr) dx^T H / (dx^T H dr).
        dx, dr = dx[better].unsqueeze(-1), (r_candidate[better] - r[accepted]).unsqueeze(-1)
        H_dr = H[accepted] @ dr
        dxT_H = dx.transpose(1, 2) @ H[accepted]
        denominator = (dx.transpose(1, 2) @ H_dr).squeeze(-1)
        usable = denominator.abs().squeeze(-1) > 1e-12 * dx.norm(dim=1).squeeze(-1) \
            * H_dr.norm(dim=1).squeeze(-1)
        updated = H[accepted] + (dx - H_dr) @ dxT_H / torch.where(
            usable.unsqueeze(-1), denominator, torch.ones_like(denominator)).unsqueeze(-1)
        H[accepted] = torch.where(usable[:, None, None], updated,
                                  Vh_candidate[better].transpose(1, 2))
        x[accepted], r[accepted] = candidate[better], r_candidate[better]
        Vh[accepted], norm[accepted] = Vh_candidate[better], norm_candidate[better]
        step_size[accepted] = (2 * step_size[accepted]).clamp_max(1.0)
        step_size[rejected] /= 2
        H[rejected] = Vh[rejected].transpose(1, 2)
        stalled |= step_size < 2.0 ** -max_halvings
    return x, norm


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
