"""Which local component is which, and its sign, consistently along the data manifold.

Each local component ``(u_i(x), v_i(x))`` of the Jacobian SVD is defined up to a joint
sign flip, and its rank by local variance can change along the manifold (at the tails of
the paper's S-curve the variance along the curve drops below the variance across it).
A per-point rule ("largest loading positive", "i-th largest variance") therefore flips or
swaps mid-manifold, and one global reference cannot follow a tangent that turns by 90
degrees. Instead, at fit time we build a reference field over (a subsample of) the
training data by propagation along a nearest-neighbour graph:

1. take the minimum spanning tree of the k-nearest-neighbour graph of the reference
   points, rooted at the point nearest the mean;
2. at the root, component ``i`` is the ``i``-th largest local variance; walking the tree,
   each point's components are matched to its parent's by the assignment that maximizes
   ``sum_i |v_i(parent) . v_j(point)|`` among its few largest-variance candidates, and
   each sign is chosen so that ``v_i(parent) . v_i(point) > 0``; ``v_i(parent)`` is the
   last *reliable* direction on the way from the root, one whose local variance is not
   within a factor 1.5 of another's (where two variances cross, the SVD's directions
   rotate within their span, and following them step by step would swap the two);
3. each component's whole field is flipped so that its mean direction has its largest
   loading positive -- PCA's rule, which makes the linear flow agree with PCA exactly.

A new point is matched the same way to its nearest reference point. Component ``i``
thus means the same thing at neighbouring points wherever the reference points sample
the manifold densely; where the local ranking agrees with the global one (and always for
the linear flow), components are ordered by local variance, largest first.
"""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, \
    minimum_spanning_tree
from sklearn.neighbors import kneighbors_graph

# Neighbours per reference point in the propagation graph.
_N_NEIGHBORS = 10

# Extra candidates (beyond n_components) a point's components are matched among.
N_EXTRA_CANDIDATES = 2

# Local variances within this ratio of each other make their directions unreliable
# (near-degenerate singular values: the directions rotate within their span).
_DEGENERATE_RATIO = 1.5


def track_reference_field(points, candidates, n_components, variances=None):
    """Match and orient local directions over reference points.

    Each point's candidates are matched to its parent's *last reliable* directions: a
    component's direction is reliable where its local variance is not within
    ``_DEGENERATE_RATIO`` of another candidate's. Where two variances cross, the SVD's
    directions rotate by 90 degrees within their span over a short distance; matching
    across such a crossing to the directions before it keeps each component's identity
    (matching step by step would follow the rotation and swap them).

    Parameters
    ----------
    points : ndarray of shape (m, D)
        Reference points (centered data).
    candidates : ndarray of shape (m, q, D)
        Each point's ``q >= n_components`` largest-variance local directions (rows),
        ordered by local variance, any signs.
    n_components : int
    variances : ndarray of shape (m, q), optional
        The candidates' local variances; without them every direction is reliable.

    Returns
    -------
    field : ndarray of shape (m, n_components, D)
        The tracked, oriented directions.
    """
    m = points.shape[0]
    field = candidates[:, :n_components].copy()
    if m > 1:
        memory = field.copy()  # the last reliable directions on the way from the root
        tree = minimum_spanning_tree(reference_graph(points))
        tree = tree + tree.T
        _, labels = connected_components(tree, directed=False)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            root = members[np.argmin(np.linalg.norm(points[members], axis=1))]
            order, parents = breadth_first_order(tree, root, directed=False)
            for node in order[1:]:
                chosen, field[node] = _match(candidates[node], memory[parents[node]])
                reliable = np.ones(n_components, dtype=bool) if variances is None else \
                    _separated(variances[node], chosen)
                memory[node] = np.where(reliable[:, None], field[node],
                                        memory[parents[node]])
    return _flip_by_mean(field)


def _separated(variances, chosen):
    """Whether each chosen candidate's variance differs from every other candidate's by
    at least the ratio ``_DEGENERATE_RATIO``."""
    log_variances = np.log(np.maximum(variances, np.finfo(float).tiny))
    gaps = np.abs(log_variances[chosen][:, None] - log_variances[None, :])
    gaps[np.arange(len(chosen)), chosen] = np.inf
    return gaps.min(axis=1) >= np.log(_DEGENERATE_RATIO)


def reference_graph(points):
    """The symmetric k-nearest-neighbour graph of the reference points (distances as
    weights), the graph components are propagated along.

    Parameters
    ----------
    points : ndarray of shape (m, D)

    Returns
    -------
    graph : sparse matrix of shape (m, m)
    """
    m = points.shape[0]
    if m < 2:
        return csr_matrix((m, m))
    graph = kneighbors_graph(points, min(_N_NEIGHBORS, m - 1), mode="distance")
    graph.data += 1e-12  # zero distances (duplicates) would drop edges
    return graph.maximum(graph.T)


def _match(candidates, reference):
    """The indices of the candidates (rows) assigned to the reference directions, and
    those candidates with signs aligned."""
    overlap = candidates @ reference.T  # (q, k)
    _, chosen = linear_sum_assignment(-np.abs(overlap).T)  # for each reference row
    chosen = chosen if chosen.ndim else np.array([chosen])
    matched = candidates[chosen]
    signs = np.where(np.einsum("kd,kd->k", matched, reference) < 0, -1.0, 1.0)
    return chosen, matched * signs[:, None]


def _flip_by_mean(directions):
    """Flip each component's field so its mean direction's largest loading is positive."""
    mean = directions.mean(axis=0)
    largest = np.argmax(np.abs(mean), axis=1)
    signs = np.sign(mean[np.arange(mean.shape[0]), largest])
    signs[signs == 0] = 1.0
    return directions * signs[None, :, None]


def match_to_reference(candidates, reference):
    """Assign each point's candidate directions to its reference's components.

    Greedy matching by ``|v . r|`` (largest overlap first), vectorized over points.

    Parameters
    ----------
    candidates : torch.Tensor of shape (n, q, D)
        Local directions (rows) ordered by local variance.
    reference : torch.Tensor of shape (n, k, D)
        The tracked directions of each point's nearest reference point.

    Returns
    -------
    index : torch.Tensor of shape (n, k)
        Candidate chosen for each component.
    signs : torch.Tensor of shape (n, k)
        +1 or -1 to apply to the chosen candidate (and its component value).
    """
    n, q, _ = candidates.shape
    k = reference.shape[1]
    overlap = candidates @ reference.transpose(1, 2)  # (n, q, k)
    score = overlap.abs().clone()
    index = torch.zeros((n, k), dtype=torch.long, device=candidates.device)
    rows = torch.arange(n, device=candidates.device)
    for _ in range(k):
        flat = score.reshape(n, -1).argmax(dim=1)
        cand, comp = flat // k, flat % k
        index[rows, comp] = cand
        score[rows, cand, :] = -1.0
        score[rows, :, comp] = -1.0
    chosen_overlap = overlap.gather(1, index.unsqueeze(-1).expand(-1, -1, k))
    diagonal = chosen_overlap[:, torch.arange(k), torch.arange(k)]
    signs = torch.where(diagonal < 0, -1.0, 1.0).to(candidates.dtype)
    return index, signs
