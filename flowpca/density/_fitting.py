"""Fitting a flow's density: the closed form of the linear flow, and gradient training
with ``alpha`` chosen by held-out likelihood."""

import copy
import dataclasses
import warnings

import numpy as np
import scipy.linalg
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import svd_flip

from .. import _device
from .._chunks import flow_device_dtype, iter_tensor_chunks
from ..components import local_svd
from ..exceptions import DegenerateFitWarning
from ..flows import Flow, LinearFlow
from ..flows import FlowSettings
from ..flows._families import build_flow
from ._checks import SINGULAR_RTOL, check_nonsingular
from ._training import train_flow

# alpha='auto' by held-out likelihood (zuko's families): every grid value after the first
# fine-tunes a copy of the fitted flow for this fraction of its epochs (at least
# _ALPHA_FINE_TUNE_MIN_EPOCHS), from this fraction of its initial learning rate.
_ALPHA_FINE_TUNE_FRACTION = 0.05
_ALPHA_FINE_TUNE_MIN_EPOCHS = 5
_ALPHA_FINE_TUNE_LEARNING_RATE = 0.1

# Median ratio of the smallest local variance to the global variance in that direction
# below which an unconverged alpha=0 fit is reported as collapsing.
_COLLAPSE_RATIO = 1e-3


def exact_linear_solution(Xc, alpha):
    """Eigendecomposition of ``Sigma_hat + alpha I`` via the SVD of the centered data.

    Returns the variances (descending) and the orthonormal directions (rows, PCA's
    signs).
    """
    n_samples, n_features = Xc.shape
    _, s, Vt = scipy.linalg.svd(Xc, full_matrices=False)
    variances = s**2 / n_samples
    if Vt.shape[0] < n_features:
        complement = scipy.linalg.null_space(Vt).T
        Vt = np.vstack([Vt, complement])
        variances = np.concatenate([variances, np.zeros(complement.shape[0])])
    return variances + alpha, svd_flip(None, Vt, u_based_decision=False)[1]


def fit_linear(Xc, alpha, dtype):
    """The linear flow at its optimum ``W = (Sigma_hat + alpha I)^-1/2`` (in float64),
    with the closed form's variances and directions; a ValueError where a model in
    ``dtype`` cannot represent it (:func:`check_nonsingular`)."""
    variances, directions = exact_linear_solution(Xc, alpha)
    check_nonsingular(variances, dtype, alpha)
    weight = directions / np.sqrt(variances)[:, None]
    return LinearFlow(Xc.shape[1], torch.as_tensor(weight)), (variances, directions)


def split_validation(Xc, n_validation, random_state):
    """``(x_train, x_val)``: ``n_validation`` rows at random held out."""
    order = random_state.permutation(Xc.shape[0])
    return Xc[order[n_validation:]], Xc[order[:n_validation]]


def make_flow(flow, Xc, device, dtype, generator, floor, *, n_layers, activation,
              flow_params, n_components):
    """The initial flow for centered ``Xc``: a family built by name, a copy of a
    :class:`~flowpca.flows.Flow`, or a zuko flow wrapped on a copy. ``floor`` is the
    variance floor of the initializations that whiten or standardize the data;
    ``n_components`` the latent dimension of an injective family."""
    if not isinstance(flow, (str, Flow)):
        from ..flows.zuko import ZukoFlow  # imports zuko only when it is used

        wrapped = ZukoFlow(copy.deepcopy(flow)).to(device, dtype)
        if wrapped.n_features != Xc.shape[1]:
            raise ValueError(f"The flow acts on {wrapped.n_features} features but X "
                             f"has {Xc.shape[1]} features.")
        return wrapped.standardize_for(_device.to_tensor(Xc, device, dtype), floor)
    if isinstance(flow, Flow):
        if flow.n_features != Xc.shape[1]:
            raise ValueError(f"The flow acts on {flow.n_features} features but X "
                             f"has {Xc.shape[1]} features.")
        return copy.deepcopy(flow).to(device, dtype)
    settings = FlowSettings(alpha=floor, n_layers=n_layers, activation=activation,
                            flow_params=dict(flow_params or {}), generator=generator,
                            n_components=n_components)
    return build_flow(flow, _device.to_tensor(Xc, device, dtype), settings)


def train(flow, x_train, x_val, options, alphas, generator):
    """Train ``flow`` (on its device, in its dtype) on centered ``x_train`` with
    ``options`` and the first of ``alphas``; with held-out ``x_val`` each further value
    fine-tunes a copy (:func:`choose_alpha`).

    Returns
    -------
    flow : Flow
        The trained flow (the best held-out copy), finalized.
    result : TrainingResult
    alpha : float
        The chosen value.
    alpha_scores : list of (float, float) or None
        Each value tried with its best held-out score.
    """
    device, dtype = flow_device_dtype(flow)
    x_train_t = _device.to_tensor(x_train, device, dtype)
    x_val_t = None if x_val is None else _device.to_tensor(x_val, device, dtype)
    options = dataclasses.replace(options, alpha=alphas[0])
    result = train_flow(flow, x_train_t, options, generator, x_val_t)
    chosen, alpha_scores = alphas[0], None
    # Without held-out data (early_stopping=False) the grid's first value is kept.
    if len(alphas) > 1 and x_val is not None and not (result.diverged or result.interrupted):
        flow, chosen, alpha_scores = choose_alpha(flow, result, alphas, options,
                                                  (x_train_t, x_val_t, generator))
    flow.finalize_training()
    return flow, result, chosen, alpha_scores


def choose_alpha(flow, result, alphas, options, data):
    """The flow and ``alpha`` of best held-out likelihood, and each value's best
    held-out score: ``flow`` was trained with ``alphas[0]``; each further value
    fine-tunes a copy of it (warm start, a short cosine schedule). An interrupt during a
    fine-tune keeps the best so far (``result.interrupted`` is set)."""
    x_train, x_val, generator = data
    best_score, best_flow, chosen = max(result.validation_scores), flow, alphas[0]
    scores = [(alphas[0], best_score)]
    fine_tune = dataclasses.replace(
        options, max_iter=max(_ALPHA_FINE_TUNE_MIN_EPOCHS,
                              int(_ALPHA_FINE_TUNE_FRACTION * options.max_iter)),
        learning_rate="cosine",
        learning_rate_init=_ALPHA_FINE_TUNE_LEARNING_RATE * options.learning_rate_init)
    for alpha in alphas[1:]:
        candidate = copy.deepcopy(flow)
        with warnings.catch_warnings():  # a short fine-tune: not a fit of its own
            warnings.simplefilter("ignore", ConvergenceWarning)
            tuned = train_flow(candidate, x_train, dataclasses.replace(
                fine_tune, alpha=alpha), generator, x_val)
        if tuned.interrupted or tuned.diverged or not tuned.validation_scores:
            result.interrupted |= tuned.interrupted
            break
        scores.append((alpha, max(tuned.validation_scores)))
        if scores[-1][1] > best_score:
            best_score, best_flow, chosen = scores[-1][1], candidate, alpha
    return best_flow, chosen, scores


def warn_if_unbounded(flow, Xc, converged):
    """Without the penalty, data on a lower-dimensional set make the likelihood
    unbounded: the flow's local variance across the set shrinks towards zero for as long
    as training runs (paper, section 5). A :class:`DegenerateFitWarning` when that is
    seen."""
    if flow.is_linear:
        variances, _ = exact_linear_solution(Xc, 0.0)
        collapsed = variances.min() <= SINGULAR_RTOL * variances.max()
    else:
        # Median over points of the smallest local variance relative to the data's
        # global variance along the same direction.
        covariance = torch.as_tensor(Xc.T @ Xc / Xc.shape[0])
        ratios = []
        for x in iter_tensor_chunks(Xc, flow):
            with torch.no_grad():
                _, s, Vh = local_svd(flow, x)
            thinnest = Vh[:, -1, :].to(covariance)
            global_variance = torch.einsum("ni,ij,nj->n", thinnest, covariance, thinnest)
            ratios.append(_device.to_numpy(s[:, -1].to(covariance).pow(-2)
                                           / global_variance))
        collapsed = not converged and np.median(np.concatenate(ratios)) < _COLLAPSE_RATIO
    if collapsed:
        warnings.warn(
            "With alpha=0 the data appear to lie on a lower-dimensional set: the "
            "likelihood is unbounded there, and the flow's Jacobian grows (its "
            "smallest local variances shrink towards zero) without settling. "
            "Set alpha > 0.", DegenerateFitWarning, stacklevel=4)
