"""The component map of a fitted flow: data points to components, and back.

Which map a model has is decided once, at fit, from the flow's traits
(:func:`make_component_map`):

- :class:`LinearComponents`: the linear flow, one frame everywhere (PCA's
  ``components_``).
- :class:`LatentComponents`: injective flows, the latent coordinates ``z = g^+(x)`` and
  ``g(z)`` back.
- :class:`LocalComponents`: every other flow. The per-point Jacobian SVD ``J_f(x) = U S
  V^T``, matched and signed against a reference field tracked along the training data
  (:mod:`._orientation`); the values are projected (``S^-1 U^T f(x)``) or integrated
  (:mod:`._integration`), and inverted by a per-point solve (:mod:`._inverse`).

A map holds numpy arrays and plain values only (the estimator's state stays free of torch
objects, see :mod:`flowpca._persistence`); the flow is passed to every method. Inputs and
outputs are numpy arrays of centered points (or components), evaluated in row chunks.
"""

import abc
import math
import warnings
from contextlib import nullcontext

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .. import _device
from .._chunks import flow_device_dtype, iter_row_chunks, iter_tensor_chunks, \
    jacobian_bytes_per_row, map_chunks
from ..exceptions import AmbiguousInverseWarning
from . import _integration, _inverse, _orientation
from ._dimension import intrinsic_dimension
from ._local_svd import linear_decomposition, local_svd, top_local_components

# Mean local variances (explained_variance_, intrinsic_dimension_) of a nonlinear flow:
# over at most this many training points, drawn at random (one Jacobian SVD each; their
# standard error is well below the 100x threshold that separates components from the
# floor).
_MAX_VARIANCE_POINTS = 1000

# Reference field for component signs: at most this many training points, and at most
# this many stored floats (points x components x features).
_MAX_REFERENCE_POINTS = 1000
_REFERENCE_FLOATS = 20_000_000

# svd_solver='auto' goes matrix-free from this many features when at most
# 1/_RANDOMIZED_MIN_RATIO of them are needed. Measured (1 thread, 8 layers, k=7):
# full/randomized time 0.4 at D=64, 0.8 at D=256, 1.5 at D=784.
_RANDOMIZED_MIN_FEATURES = 512
_RANDOMIZED_MIN_RATIO = 16

# Largest dimension for which the inverse retries the points the quasi-Newton stage
# leaves unconverged by Levenberg-Marquardt with a finite-difference Jacobian (2 D
# component evaluations per iteration). Measured (MLP flows): at D = 3 it rescues 44 of
# the 47 S-curve points left of 300; at D = 64 (digits) it rescued none of 7 and cost
# 8-50 s per point.
LM_MAX_FEATURES = 16
# With all components given, the inverse restarts an unconverged point from this many
# further reference points (one for more than LM_MAX_FEATURES features, where every solve
# costs more).
INVERSE_RESTARTS = 8

# The inverse (all components given, at most LM_MAX_FEATURES features) checks each
# solution for a second preimage: one more solve from the reference point farthest (in
# data space) from the solution among this many nearest the target in component space.
# Two solutions count as distinct beyond this distance relative to the data's scale.
_PREIMAGE_CHECK_STARTS = 4
_PREIMAGE_RTOL = 1e-4


class ComponentMap(abc.ABC):
    """Base of the component maps; the defaults serve every bijective flow.

    Subclasses set :attr:`name` and implement :meth:`mean_variances`, :meth:`transform`,
    :meth:`inverse` and :meth:`directions`.
    """

    #: Stored name of the map (``component_map`` in a model's state).
    name = None
    #: Whether the flow has a square Jacobian (local variances, covariance).
    bijective = True

    @abc.abstractmethod
    def mean_variances(self, flow, Xc, random_state):
        """Arithmetic and geometric means over the training data ``Xc`` of the local
        variances, each sorted in decreasing order."""

    def fit(self, flow, Xc, n_components, random_state):
        """Fix what the map needs to give ``n_components`` components; returns self."""
        self.n_components = int(n_components)
        return self

    def fitted_attributes(self):
        """Public fitted attributes of the estimator that come from the map."""
        return {}

    @abc.abstractmethod
    def transform(self, flow, Xc):
        """Components of centered points, shape ``(n, n_components)``."""

    @abc.abstractmethod
    def inverse(self, flow, Z, tol, max_iter):
        """Centered points whose components are ``Z`` (trailing components zero), and
        each point's residual ``||transform(x) - Z||``."""

    @abc.abstractmethod
    def directions(self, flow, Xc):
        """Local directions as columns, shape ``(n, D, n_components)``, ordered and
        signed like :meth:`transform`'s components."""

    def local_variances(self, flow, Xc):
        """``s_i(x)^-2`` for the singular values of ``J_f(x)``, largest first."""
        return map_chunks(Xc, flow, lambda x: local_svd(flow, x)[1] ** -2, (Xc.shape[1],))

    def local_covariance(self, flow, Xc):
        """``J^-1 J^-T`` at each point, shape ``(n, D, D)``."""

        def covariance(x):
            _, s, Vh = local_svd(flow, x)
            return Vh.transpose(1, 2) @ (Vh / s.unsqueeze(-1) ** 2)

        return map_chunks(Xc, flow, covariance, (Xc.shape[1],) * 2)

    def local_intrinsic_dimension(self, flow, Xc, alpha, threshold):
        """The rule of :func:`~flowpca.components.intrinsic_dimension` at each point."""
        return intrinsic_dimension(np.atleast_2d(self.local_variances(flow, Xc)), alpha,
                                   threshold)

    def off_manifold_distance(self, flow, Xc):
        raise ValueError("off_manifold_distance needs flow='injective': a bijective "
                         "flow's manifold is the whole space.")

    def get_state(self):
        """The map as plain values and arrays, for :func:`component_map_from_state`."""
        return {"component_map": self.name, **vars(self)}


class LinearComponents(ComponentMap):
    """PCA's frame, the same at every point: ``transform(x) = x @ components_.T``.

    Parameters
    ----------
    variances, directions : ndarray, optional
        The closed-form solution's variances (descending) and directions (rows); from
        the flow's weight when omitted.
    """

    name = "linear"

    def __init__(self, variances=None, directions=None):
        self.variances = variances
        self.directions_ = directions

    def mean_variances(self, flow, Xc, random_state):
        if self.variances is None:  # the closed form's are exact, even for an
            self.variances, self.directions_ = linear_decomposition(flow)  # ill-conditioned W
        return self.variances, self.variances

    def fit(self, flow, Xc, n_components, random_state):
        super().fit(flow, Xc, n_components, random_state)
        self.components_ = self.directions_[:self.n_components]
        del self.variances, self.directions_  # not needed after fit
        return self

    def fitted_attributes(self):
        return {"components_": self.components_}

    def transform(self, flow, Xc):
        chunks = [Xc[rows] @ self.components_.T
                  for rows in iter_row_chunks(Xc.shape[0], 16 * Xc.shape[1])]
        return np.concatenate(chunks) if chunks else np.empty((0, self.n_components))

    def inverse(self, flow, Z, tol, max_iter):
        return Z @ self.components_, np.zeros(Z.shape[0])

    def directions(self, flow, Xc):
        return np.broadcast_to(self.components_.T, (Xc.shape[0],) + self.components_.T.shape
                               ).copy()


class LatentComponents(ComponentMap):
    """An injective flow's latent coordinates ``z = g^+(x)``; the inverse is ``g(z)``, a
    point on the learned manifold."""

    name = "latent"
    bijective = False

    def mean_variances(self, flow, Xc, random_state):
        # The latent coordinates' variances; the manifold's dimension is d.
        variances = np.var(self._latent(flow, Xc), axis=0)
        return variances, variances

    def _latent(self, flow, Xc):
        with torch.no_grad():
            return map_chunks(Xc, flow, flow.project, (flow.n_components,))

    def transform(self, flow, Xc):
        return self._latent(flow, Xc)

    def inverse(self, flow, Z, tol, max_iter):
        with torch.no_grad():
            X = map_chunks(Z, flow, flow.generate, (flow.n_features,))
        return X, np.zeros(Z.shape[0])

    def _not_bijective(self, method):
        return ValueError(f"{method} needs a bijective flow: flow='injective' has no "
                          "square Jacobian; use transform (latent coordinates) and "
                          "off_manifold_distance instead.")

    def directions(self, flow, Xc):
        raise self._not_bijective("local_directions")

    def local_variances(self, flow, Xc):
        raise self._not_bijective("local_variances")

    def local_covariance(self, flow, Xc):
        raise self._not_bijective("local_covariance")

    def local_intrinsic_dimension(self, flow, Xc, alpha, threshold):
        return np.full(Xc.shape[0], self.n_components)

    def off_manifold_distance(self, flow, Xc):
        with torch.no_grad():
            return map_chunks(Xc, flow, flow.off_manifold_distance, ())


class LocalComponents(ComponentMap):
    """Per-point components from the Jacobian SVD, tracked along a reference field.

    Parameters
    ----------
    kind : {'projected', 'integrated'}
        The components' values: ``S^-1 U^T f(x)``, or the coordinates whose gradient is
        the tracked frame.
    svd_solver : {'auto', 'full', 'randomized'}
        How the top local components are computed (see the estimator's parameter).
    """

    def __init__(self, kind="projected", svd_solver="auto"):
        self.name = kind
        self.svd_solver = svd_solver

    def _svd_method(self, n_features, n_components):
        if self.svd_solver != "auto":
            return self.svd_solver
        large = (n_features >= _RANDOMIZED_MIN_FEATURES
                 and n_components * _RANDOMIZED_MIN_RATIO <= n_features)
        return "randomized" if large else "full"

    def mean_variances(self, flow, Xc, random_state):
        if Xc.shape[0] > _MAX_VARIANCE_POINTS:
            Xc = Xc[np.sort(random_state.choice(Xc.shape[0], _MAX_VARIANCE_POINTS,
                                                replace=False))]
        total, log_total = np.zeros(Xc.shape[1]), np.zeros(Xc.shape[1])
        for x in iter_tensor_chunks(Xc, flow):
            with torch.no_grad():
                s = local_svd(flow, x)[1]
            total += _device.to_numpy(s.pow(-2)).sum(axis=0)
            log_total += _device.to_numpy(-2 * s.log()).sum(axis=0)
        self._mean_variances = total / Xc.shape[0]
        return self._mean_variances, np.exp(log_total / Xc.shape[0])

    def fit(self, flow, Xc, n_components, random_state):
        """The reference field on a subsample of ``Xc`` and the reference points' own
        components (each point is its own nearest reference: matched and signed like
        its field)."""
        super().fit(flow, Xc, n_components, random_state)
        n_samples, n_features = Xc.shape
        k = self.n_components
        # The scale that tells two preimages apart: the explained variance.
        self.explained_variance = float(np.sum(self.__dict__.pop("_mean_variances")[:k]))
        budget = max(1, _REFERENCE_FLOATS // (k * n_features))
        m = min(n_samples, _MAX_REFERENCE_POINTS, budget)
        rows = np.sort(random_state.choice(n_samples, m, replace=False)) if m < n_samples \
            else np.arange(n_samples)
        points = Xc[rows]
        n_candidates = min(n_features, k + _orientation.N_EXTRA_CANDIDATES)
        method = self._svd_method(n_features, n_candidates)
        candidates, candidate_components, singular_values = [], [], []
        for x in iter_tensor_chunks(points, flow):
            with torch.no_grad() if method == "full" else nullcontext():
                s, Vh, y_hat = top_local_components(flow, x, n_candidates, method)
            candidates.append(_device.to_numpy(Vh))
            candidate_components.append(_device.to_numpy(y_hat))
            singular_values.append(_device.to_numpy(s))
        candidates = np.concatenate(candidates)
        field = _orientation.track_reference_field(
            points, candidates, k, variances=np.concatenate(singular_values) ** -2.0)
        index, signs = _orientation.match_to_reference(torch.as_tensor(candidates),
                                                       torch.as_tensor(field))
        components = torch.as_tensor(np.concatenate(candidate_components)).gather(1, index)
        point_components = _device.to_numpy(components * signs)
        if self.name == "integrated":
            point_components = _integration.integrate_reference_frame(
                points, field, _orientation.reference_graph(points))
        self.reference_points, self.reference_directions = points, field
        self.reference_point_components = point_components
        return self

    def oriented_components(self, flow, x, full=False):
        """``(s, Vh, y_hat)`` of the tracked components at centered points ``x`` (a
        tensor): matched and signed like the nearest reference point, ``y_hat``
        projected or integrated. With ``full``, all ``D`` components: the tracked ones
        first, then the others (projected) in decreasing local variance with arbitrary
        signs."""
        n_features, k = x.shape[1], self.n_components
        n_candidates = n_features if full else min(
            n_features, k + _orientation.N_EXTRA_CANDIDATES)
        method = "full" if full else self._svd_method(n_features, n_candidates)
        with torch.no_grad() if method == "full" else nullcontext():
            s, Vh, y_hat = top_local_components(flow, x, n_candidates, method)
        s, Vh, y_hat = s.detach(), Vh.detach(), y_hat.detach()
        points = torch.as_tensor(self.reference_points).to(x)
        distances = torch.cdist(x, points)
        nearest = distances.argmin(dim=1)
        point_directions = torch.as_tensor(self.reference_directions).to(x)
        index, signs = _orientation.match_to_reference(Vh, point_directions[nearest])
        if full:  # the untracked candidates follow, in their original order
            rank = torch.arange(n_candidates, device=x.device).expand(x.shape[0], -1) + k
            rank = rank.scatter(1, index, torch.arange(k, device=x.device).expand_as(index))
            index = rank.argsort(dim=1)
            signs = torch.cat([signs, torch.ones_like(s[:, k:])], dim=1)
        s = s.gather(1, index)
        Vh = Vh.gather(1, index.unsqueeze(-1).expand(-1, -1, n_features)) * signs.unsqueeze(-1)
        y_hat = y_hat.gather(1, index) * signs
        if self.name == "integrated":
            integrated = _integration.extend(
                x, Vh[:, :k], distances, points, point_directions,
                torch.as_tensor(self.reference_point_components).to(x))
            y_hat = torch.cat([integrated, y_hat[:, k:]], dim=1)
        return s, Vh, y_hat

    def transform(self, flow, Xc):
        return map_chunks(Xc, flow, lambda x: self.oriented_components(flow, x)[2],
                          (self.n_components,))

    def directions(self, flow, Xc):
        return map_chunks(
            Xc, flow, lambda x: self.oriented_components(flow, x)[1].transpose(1, 2),
            (Xc.shape[1], self.n_components))

    def inverse(self, flow, Z, tol, max_iter):
        """Solve ``transform(x) = Z`` per point, from the reference point whose
        components are nearest (see the estimator's ``inverse_transform``)."""
        n_features, k = flow.n_features, self.n_components
        device, dtype = flow_device_dtype(flow)
        points = torch.as_tensor(self.reference_points).to(device, dtype)
        point_components = torch.as_tensor(self.reference_point_components).to(points)
        out, residuals, n_ambiguous = [], [], 0
        check = k == n_features and n_features <= LM_MAX_FEATURES
        distinct = _PREIMAGE_RTOL * math.sqrt(max(self.explained_variance,
                                                  np.finfo(float).tiny))
        for rows in iter_row_chunks(Z.shape[0], jacobian_bytes_per_row(
                n_features, dtype) * (2 * n_features + 2)):
            target = torch.zeros(rows.stop - rows.start, n_features, device=device,
                                 dtype=dtype)
            target[:, :k] = _device.to_tensor(Z[rows], device, dtype)

            def residual_and_directions(x, index):
                _, Vh, y_hat = self.oriented_components(flow, x, full=True)
                return y_hat - target[index], Vh

            def solve(x0, rows):
                return _solve_components(residual_and_directions, x0, rows, tol, max_iter)

            # Start from the reference point whose components are nearest the target;
            # rows left unconverged restart from the next nearest ones. Only with all
            # components: then a solution exists (one per fold of the component map),
            # while zero-filled trailing components may have none, and restarts would
            # only multiply the cost of such points.
            restarts = 0 if k < n_features else \
                INVERSE_RESTARTS if n_features <= LM_MAX_FEATURES else 1
            n_starts = min(max(1 + restarts, _PREIMAGE_CHECK_STARTS if check else 1),
                           points.shape[0])
            starts = torch.cdist(target[:, :k], point_components).topk(
                n_starts, dim=1, largest=False).indices
            x = points[starts[:, 0]]
            norm = torch.full((x.shape[0],), torch.inf, device=device, dtype=dtype)
            for attempt in range(min(n_starts, 1 + restarts)):
                left = (norm > tol).nonzero().squeeze(1)  # all at first
                if not len(left):
                    break
                x_try, norm_try = solve(points[starts[left, attempt]], left)
                better = norm_try < norm[left]
                x[left[better]], norm[left[better]] = x_try[better], norm_try[better]
            if check and n_starts > 1:
                n_ambiguous += _count_other_preimages(
                    solve, x, norm, points[starts[:, :_PREIMAGE_CHECK_STARTS]], distinct, tol)
            out.append(_device.to_numpy(x))
            residuals.append(_device.to_numpy(norm))
        residuals = np.concatenate(residuals) if residuals else np.empty(0)
        failed = ~(residuals <= tol)
        if failed.any():
            warnings.warn(f"inverse_transform did not converge for {failed.sum()} of "
                          f"{failed.size} points (worst residual {np.nanmax(residuals):.3g} "
                          f"> inverse_tol={tol}).", ConvergenceWarning, stacklevel=3)
        if n_ambiguous:
            warnings.warn(
                f"{n_ambiguous} of {residuals.size} points have another preimage with the "
                "same components (the component map is not one to one there); "
                "inverse_transform returned the one in the chart of the reference point "
                "with the nearest components.", AmbiguousInverseWarning, stacklevel=3)
        return (np.concatenate(out) if out else np.empty((0, n_features))), residuals


def _solve_components(residual_and_directions, x0, rows, tol, max_iter):
    """Solve ``transform(x) = target[rows]`` from ``x0``: quasi-Newton, then
    Levenberg-Marquardt for the rows it leaves (up to ``LM_MAX_FEATURES``)."""
    x, norm = _inverse.frame_broyden(
        lambda x, index: residual_and_directions(x, rows[index]), x0, tol=tol,
        max_iter=max_iter)
    left = (norm > tol).nonzero().squeeze(1)
    if len(left) and x0.shape[1] <= LM_MAX_FEATURES:
        x_left, norm_left = _inverse.levenberg_marquardt(
            lambda x, index: residual_and_directions(x, rows[left[index]])[0], x[left],
            tol=tol, max_iter=max_iter)
        x[left], norm[left] = x_left, norm_left
    return x, norm


def _count_other_preimages(solve, x, norm, candidates, distinct, tol):
    """How many converged rows of ``x`` have a second solution farther than ``distinct``
    from it: one solve per row from the candidate start (rows of ``candidates``, shape
    (n, c, D)) farthest from its solution."""
    solved = (norm <= tol).nonzero().squeeze(1)
    if not len(solved):
        return 0
    farthest = (candidates[solved] - x[solved, None, :]).norm(dim=2).argmax(dim=1)
    x_other, norm_other = solve(candidates[solved, farthest], solved)
    other = (norm_other <= tol) & ((x_other - x[solved]).norm(dim=1) > distinct)
    return int(other.sum())


def make_component_map(flow, component_map="auto", svd_solver="auto", exact=None):
    """The component map for a fitted ``flow``, chosen by its traits.

    Parameters
    ----------
    flow : Flow
    component_map : {'auto', 'projected', 'integrated'}
        The estimator's parameter; 'auto' is the flow's ``default_component_map``.
        Linear and injective flows have one map each, whatever it says.
    svd_solver : {'auto', 'full', 'randomized'}
    exact : tuple of ndarray, optional
        The closed-form ``(variances, directions)`` of a linear flow solved exactly.
    """
    if flow.is_injective:
        return LatentComponents()
    if flow.is_linear:
        return LinearComponents(*(exact or (None, None)))
    kind = flow.default_component_map if component_map == "auto" else component_map
    return LocalComponents(kind, svd_solver)


_MAPS = {"linear": LinearComponents, "latent": LatentComponents}


def component_map_from_state(state):
    """Rebuild a map stored by :meth:`ComponentMap.get_state`."""
    state = dict(state)
    name = state.pop("component_map")
    if name in _MAPS:
        component_map = _MAPS[name].__new__(_MAPS[name])
    elif name in ("projected", "integrated"):
        component_map = LocalComponents.__new__(LocalComponents)
    else:
        raise ValueError(f"Unknown component map {name!r} in the stored model.")
    vars(component_map).update(state)
    return component_map


def component_map_from_legacy_state(state, flow):
    """The map of a model saved before component maps existed (flowpca 0.1 up to commit
    7372b8e): it stored ``_component_map`` as a name and the reference field as
    ``_reference_points``, ``_reference_directions`` and ``_reference_point_components``.
    Those keys are removed from ``state``."""
    kind = state.pop("_component_map", "projected")
    points = state.pop("_reference_points", None)
    directions = state.pop("_reference_directions", None)
    point_components = state.pop("_reference_point_components", None)
    if flow.is_injective:
        component_map = LatentComponents()
    elif flow.is_linear:
        component_map = LinearComponents()
        component_map.components_ = state["components_"]
    else:
        component_map = LocalComponents(kind, state.get("svd_solver", "auto"))
        component_map.reference_points, component_map.reference_directions = \
            points, directions
        component_map.reference_point_components = point_components
        component_map.explained_variance = float(np.sum(state["explained_variance_"]))
    component_map.n_components = int(state["n_components_"])
    return component_map
