"""Local principal components from per-point Jacobians.

At a point ``x`` with ``J_f(x) = U S V^T`` the flow's local covariance is
``J^{-1} J^{-T} = V S^{-2} V^T``: local variances ``s_i^{-2}`` along the columns of ``V``
(directions in input space). Components are ordered by local variance, largest first.
"""

import torch
from sklearn import get_config
from sklearn.utils import gen_batches


def iter_row_chunks(n_rows, bytes_per_row):
    """Slices of ``range(n_rows)`` sized by scikit-learn's ``working_memory`` (MiB)."""
    budget = get_config()["working_memory"] * 2**20
    chunk = int(min(max(budget // max(int(bytes_per_row), 1), 1), max(n_rows, 1)))
    return gen_batches(n_rows, chunk)


def jacobian_bytes_per_row(n_features, dtype):
    """Working memory of one row of the per-point decomposition (J, U, V and temporaries)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 4 * n_features * n_features * itemsize


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


def orient(U, Vh, reference):
    """Flip each (u_i, v_i) pair jointly so that ``v_i . reference_i >= 0``.

    Parameters
    ----------
    U, Vh : torch.Tensor
        From :func:`local_svd`.
    reference : torch.Tensor of shape (D, D) or (n, D, D)
        Reference direction per component (rows), global or per point.
    """
    alignment = (Vh * reference).sum(dim=-1)
    signs = torch.where(alignment < 0, -1.0, 1.0).to(Vh.dtype)
    return U * signs.unsqueeze(-2), Vh * signs.unsqueeze(-1)


def unwhitened_components(U, s, y):
    """``y_hat = S^{-1} U^T y`` row by row (Feinman & Parthasarathy 2020, section 4)."""
    return torch.einsum("nji,nj->ni", U, y) / s
