"""Signs of local principal components that hold along the data manifold.

Each local component ``(u_i(x), v_i(x))`` of the Jacobian SVD is defined up to a joint
sign flip. A per-point rule ("largest loading positive") flips mid-manifold wherever the
tangent's dominant coordinate changes, and one global reference cannot follow a tangent
that turns by 90 degrees. Instead, at fit time we orient a reference field over (a
subsample of) the training data by propagation along a nearest-neighbour graph:

1. build the k-nearest-neighbour graph of the reference points;
2. for each component, take the spanning tree that follows the best-aligned edges
   (weight ``1 - |v_i(a) . v_i(b)|``) and fix each point's sign from its parent's, so
   neighbours agree (``v_i(a) . v_i(b) > 0``) along the tree;
3. flip the whole field of component ``i`` so that its mean direction has its largest
   loading positive -- PCA's rule, which makes the linear flow agree with PCA exactly.

A new point takes the sign that aligns ``v_i(x)`` with ``v_i`` of its nearest reference
point. The rule is deterministic given the fitted model and continuous along the manifold
wherever the reference points sample it densely.
"""

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, \
    minimum_spanning_tree
from sklearn.neighbors import NearestNeighbors

# Neighbours per reference point in the orientation graph.
_N_NEIGHBORS = 10


def orient_reference_field(points, directions):
    """Orient a field of local directions over reference points.

    Parameters
    ----------
    points : ndarray of shape (m, D)
        Reference points (centered data).
    directions : ndarray of shape (m, k, D)
        Unit directions ``v_i`` per point and component, any signs.

    Returns
    -------
    oriented : ndarray of shape (m, k, D)
        The directions with signs chosen as described in the module docstring.
    """
    m, k, _ = directions.shape
    if m == 1:
        return _flip_by_mean(directions)
    n_neighbors = min(_N_NEIGHBORS, m - 1)
    neighbors = NearestNeighbors(n_neighbors=n_neighbors).fit(points)
    rows = np.repeat(np.arange(m), n_neighbors)
    cols = neighbors.kneighbors(return_distance=False).ravel()
    oriented = directions.copy()
    for i in range(k):
        alignment = np.einsum("ed,ed->e", directions[rows, i], directions[cols, i])
        # Zero-weight entries would vanish from a sparse graph: keep weights positive.
        weights = 1.0 - np.abs(alignment) + 1e-12
        graph = csr_matrix((weights, (rows, cols)), shape=(m, m))
        graph = graph.maximum(graph.T)
        tree = minimum_spanning_tree(graph)
        tree = tree + tree.T
        _, labels = connected_components(tree, directed=False)
        signs = np.ones(m)
        for label in np.unique(labels):
            root = np.flatnonzero(labels == label)[0]
            order, parents = breadth_first_order(tree, root, directed=False)
            for node in order[1:]:
                parent = parents[node]
                dot = directions[node, i] @ directions[parent, i]
                signs[node] = signs[parent] * (1.0 if dot >= 0 else -1.0)
        oriented[:, i] *= signs[:, None]
    return _flip_by_mean(oriented)


def _flip_by_mean(directions):
    """Flip each component's field so its mean direction's largest loading is positive."""
    mean = directions.mean(axis=0)
    largest = np.argmax(np.abs(mean), axis=1)
    signs = np.sign(mean[np.arange(mean.shape[0]), largest])
    signs[signs == 0] = 1.0
    return directions * signs[None, :, None]


def nearest_reference(x, reference_points):
    """Index of the nearest reference point for each row of ``x`` (torch tensors)."""
    return torch.cdist(x, reference_points).argmin(dim=1)
