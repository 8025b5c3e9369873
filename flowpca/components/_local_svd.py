"""Local principal components from per-point Jacobians.

At a point ``x`` with ``J_f(x) = U S V^T`` the flow's local covariance is
``J^{-1} J^{-T} = V S^{-2} V^T``: local variances ``s_i^{-2}`` along the columns of ``V``
(directions in input space). Components are ordered by local variance, largest first.
"""

import numpy as np
import scipy.linalg
import torch
from sklearn.utils.extmath import svd_flip


def local_svd(flow, x):
    """Per-point SVD of the Jacobian, ordered by local variance (largest first).

    Returns
    -------
    U : torch.Tensor of shape (n, D, D)
        Output-space singular vectors (columns).
    s : torch.Tensor of shape (n, D)
        Singular values, ascending (local variances ``s**-2`` descending).
    Vh : torch.Tensor of shape (n, D, D)
        Input-space directions as rows: ``Vh[:, i]`` is the i-th local direction.
    """
    U, s, Vh = torch.linalg.svd(flow.jacobian(x))
    return U.flip(-1), s.flip(-1), Vh.flip(-2)


def unwhitened_components(U, s, y):
    """``y_hat = S^{-1} U^T y`` row by row (Feinman & Parthasarathy 2020, section 4)."""
    return torch.einsum("nji,nj->ni", U, y) / s


def top_local_components(flow, x, n_components, method="full", n_oversamples=10,
                         n_iter=30, generator=None):
    """The ``n_components`` largest-variance local components at each row of ``x``.

    Parameters
    ----------
    flow : Flow
    x : torch.Tensor of shape (n, D)
        Centered points.
    n_components : int
    method : {'full', 'randomized'}
        'full' takes the SVD of the whole Jacobian; 'randomized' runs subspace iteration
        on the local covariance ``J^{-1} J^{-T}`` with the flow's inverse-Jacobian-vector
        products only (no ``D x D`` matrix is formed or decomposed).
    n_oversamples, n_iter : int
        Extra subspace columns and iterations for 'randomized'.
    generator : torch.Generator, optional
        Start of the subspace for 'randomized'; a private generator seeded with 0 if
        omitted (never torch's global one).

    Returns
    -------
    s : torch.Tensor of shape (n, k)
        Singular values of ``J``, ascending (local variances ``s**-2`` descending).
    Vh : torch.Tensor of shape (n, k, D)
        Local directions (rows), signs not yet oriented.
    y_hat : torch.Tensor of shape (n, k)
        Un-whitened components ``v_i^T J^{-1} f(x) = s_i^{-1} u_i^T f(x)``.
    """
    y = flow(x)[0]
    if method == "full":
        U, s, Vh = local_svd(flow, x)
        k = n_components
        return s[:, :k], Vh[:, :k], unwhitened_components(U[..., :k], s[:, :k], y)
    return _randomized_top_components(flow, x, y, n_components, n_oversamples, n_iter,
                                      generator)


def _randomized_top_components(flow, x, y, k, n_oversamples, n_iter, generator):
    n, D = x.shape
    q = min(D, k + n_oversamples)
    apply_inverse, apply_inverse_transpose = flow.inverse_jacobian_operators(x)
    if generator is None:  # a private, fixed start: deterministic and thread-safe
        generator = torch.Generator(device=x.device).manual_seed(0)

    def orthonormal_rows(V):
        return torch.linalg.qr(V.transpose(1, 2))[0].transpose(1, 2)

    # Subspace iteration on the local covariance C = J^{-1} J^{-T}.
    Q = orthonormal_rows(torch.randn((n, q, D), generator=generator, dtype=x.dtype,
                                     device=x.device))
    for _ in range(n_iter):
        Q = orthonormal_rows(apply_inverse(apply_inverse_transpose(Q)))
    # Rayleigh-Ritz: B = J^{-T} Q, so Q^T C Q = B^T B; its SVD orders the directions.
    B = apply_inverse_transpose(Q)
    _, sigma, Wh = torch.linalg.svd(B.transpose(1, 2), full_matrices=False)
    Vh = Wh[:, :k] @ Q  # rows: top-k eigenvectors of the local covariance
    s = 1.0 / sigma[:, :k]
    y_hat = (Vh * apply_inverse(y.unsqueeze(1))).sum(dim=-1)
    return s, Vh, y_hat


def linear_decomposition(flow):
    """Variances (descending) and directions (rows, PCA's signs) of a linear flow
    ``f(x) = W x``: the eigenpairs of ``(W^T W)^-1``."""
    weight = flow.weight.detach().cpu().numpy()
    _, s, Vt = scipy.linalg.svd(weight)
    order = np.argsort(s, kind="stable")
    return 1.0 / s[order] ** 2, svd_flip(None, Vt[order], u_based_decision=False)[1]
