"""Integrated components: global coordinates whose gradient is the tracked local frame.

The projected components ``S(x)^-1 U(x)^T f(x)`` are global coordinates where the flow
maps the data manifold onto a flat image in latent space, as the paper's MLP does. A
spline or autoregressive flow is as good a density model while bending that image, and
the projection of a bent image on the local direction ``U(x)`` is then not monotone along
the manifold (on the paper's S-curve, |Spearman| 0.3-0.4 with the curve parameter for
``flow='nsf'``, although its local directions match the curve's tangent to a median
|cos| of 0.999).

The integrated components ``c(x)`` are instead defined by their gradient: ``dc = V(x)^T
dx``, the tracked un-whitened local directions (the gradient the projected components
have when the frame is frozen). On the reference points they solve the least-squares
problem over the edges ``(i, j)`` of the reference graph

    min_c  sum_(i, j) || c_j - c_i - (V_i + V_j)^T (x_j - x_i) / 2 ||^2,

with the mean of ``c`` over each connected part of the graph equal to the mean of the
projections ``V_i^T x_i`` (centered data). Where the frame is constant (a linear flow)
the residuals vanish and ``c = V^T x``: PCA's transform. A new point extends its ``K``
nearest reference points' values along the mean frame, ``c_j + (V_j + V(x))^T (x - x_j)
/ 2``, blended with weights ``(h - d_j)_+`` where ``h`` is the distance to the
``(K+1)``-th nearest reference point, so that ``c`` is continuous in ``x``.
"""

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from scipy.sparse.csgraph import connected_components

# Reference points blended to extend the integrated components to a new point.
N_BLENDED = 4


def integrate_reference_frame(points, directions, graph):
    """Integrated components at the reference points.

    Parameters
    ----------
    points : ndarray of shape (m, D)
        Reference points (centered data).
    directions : ndarray of shape (m, k, D)
        Their tracked local directions (rows), as from
        :func:`flowpca.components._orientation.track_reference_field`.
    graph : sparse matrix of shape (m, m)
        Symmetric neighbour graph over the points (any nonzero entry is an edge).

    Returns
    -------
    values : ndarray of shape (m, k)
        The components ``c`` of the module docstring.
    """
    m = points.shape[0]
    projections = np.einsum("mkd,md->mk", directions, points)
    edges = scipy.sparse.triu(graph, k=1).tocoo()
    start, end = edges.row, edges.col
    n_edges = start.size
    # Incidence matrix: row e reads c[end_e] - c[start_e].
    incidence = scipy.sparse.csr_matrix(
        (np.r_[np.ones(n_edges), -np.ones(n_edges)],
         (np.r_[np.arange(n_edges), np.arange(n_edges)], np.r_[end, start])),
        shape=(n_edges, m))
    increments = np.einsum("ekd,ed->ek", 0.5 * (directions[start] + directions[end]),
                           points[end] - points[start])
    # Graph Laplacian plus one rank-one term per connected part that pins its mean:
    # symmetric positive definite, and each part's mean comes out as prescribed.
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    indicator = scipy.sparse.csr_matrix((np.ones(m), (np.arange(m), labels)))
    system = incidence.T @ incidence + indicator @ scipy.sparse.diags(
        1.0 / sizes) @ indicator.T
    part_means = np.stack([np.bincount(labels, projections[:, i]) / sizes
                           for i in range(projections.shape[1])], axis=1)
    rhs = incidence.T @ increments + part_means[labels]
    values = scipy.sparse.linalg.spsolve(system.tocsc(), rhs)
    return np.asarray(values).reshape(m, -1)


def extend(x, directions, distances, points, point_directions, point_values):
    """Integrated components at new points, from the nearest reference points.

    Parameters
    ----------
    x : torch.Tensor of shape (n, D)
        Centered points.
    directions : torch.Tensor of shape (n, k, D)
        Their tracked local directions.
    distances : torch.Tensor of shape (n, m)
        Their distances to the reference points.
    points, point_directions, point_values : torch.Tensor
        The reference points ``(m, D)``, their directions ``(m, k, D)`` and integrated
        components ``(m, k)``.

    Returns
    -------
    values : torch.Tensor of shape (n, k)
    """
    m = points.shape[0]
    n_blended = min(N_BLENDED, m)
    distance, nearest = distances.topk(min(n_blended + 1, m), dim=1, largest=False)
    if m > n_blended:  # weights vanish at the (K+1)-th nearest: continuous in x
        weight = (distance[:, -1:] - distance[:, :n_blended]).clamp_min(0.0)
        nearest = nearest[:, :n_blended]
    else:
        weight = torch.ones_like(distance)
    tied = weight.sum(dim=1, keepdim=True) == 0  # the K+1 nearest all equally far
    weight = torch.where(tied, torch.ones_like(weight), weight)
    weight = weight / weight.sum(dim=1, keepdim=True)
    frame = 0.5 * (point_directions[nearest] + directions.unsqueeze(1))  # (n, K, k, D)
    steps = x.unsqueeze(1) - points[nearest]  # (n, K, D)
    local = point_values[nearest] + torch.einsum("nbkd,nbd->nbk", frame, steps)
    return torch.einsum("nb,nbk->nk", weight, local)
