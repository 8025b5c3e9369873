"""Checks that a model in a given dtype can represent the data, and that a fitted flow
scores its own training data."""

import math
from numbers import Real

import numpy as np
import torch

from .._chunks import FORWARD_BYTES_PER_FEATURE, iter_tensor_chunks
from ._objective import log_likelihood

# Relative size below which a covariance eigenvalue counts as zero.
SINGULAR_RTOL = 1e-12


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def center(X, dtype):
    """The mean of ``X`` and ``X - mean``; a ValueError when a model in ``dtype`` cannot
    represent the data's second moments: the sum of all ``(X - mean)**2`` must stay below
    the largest float by a factor ``1/eps``, the headroom that the flow's own products
    (local variances ``s**-2``, their sums) need."""
    n_samples, n_features = X.shape
    with np.errstate(over="ignore", invalid="ignore"):
        mean = X.mean(axis=0)
        # One correction pass (the corrected two-pass algorithm): the rounding error of
        # the mean no longer shows up as spread, e.g. constant features center to 0.
        mean = mean + (X - mean).mean(axis=0)
        Xc = X - mean
        largest = float(np.max(np.abs(Xc))) if Xc.size else 0.0
    finfo = torch.finfo(dtype)
    limit = math.sqrt(finfo.max * finfo.eps / (n_samples * n_features))
    if not (np.isfinite(mean).all() and largest <= limit):  # False for NaN too
        raise ValueError(
            f"The values of X are too large for a {_dtype_name(dtype)} "
            f"model: sums of squared deviations from the mean would overflow (largest "
            f"|X - mean| = {largest:.3g}; at most {limit:.3g} for {n_samples} x "
            f"{n_features} data). Rescale X, e.g. with sklearn.preprocessing.StandardScaler.")
    return mean, Xc


def check_nonsingular(variances, dtype, alpha):
    """With ``alpha=0`` the maximum-likelihood flow needs a nonsingular covariance
    (eigenvalues ``variances``) whose smallest variance ``dtype`` can invert."""
    if alpha > 0:
        return  # the floor alpha keeps every variance positive, whatever the scales
    rank = int(np.sum(variances > SINGULAR_RTOL * variances.max()))
    if rank < variances.size:
        raise ValueError(
            f"The covariance of X is singular (rank {rank} < n_features="
            f"{variances.size}), so the maximum-likelihood flow does not exist with "
            "alpha=0. Set alpha > 0 (a variance floor) or reduce the features.")
    # The flow's Jacobian scales like variance**-1/2: its square needs the headroom.
    finfo = torch.finfo(dtype)
    smallest = 1.0 / (finfo.max * finfo.eps)
    if variances.min() < smallest:
        raise ValueError(
            f"The values of X are too small for a {_dtype_name(dtype)} "
            f"model with alpha=0: the smallest variance is {variances.min():.3g}, below "
            f"{smallest:.3g}. Rescale X (e.g. with sklearn.preprocessing.StandardScaler) "
            "or set alpha > 0 (a variance floor).")


def check_variance_range(Xc, dtype, alpha):
    """A trained flow's local variances come from the SVD of its Jacobian, which
    resolves singular values down to ``eps`` times the largest: variances (with the
    floor alpha) spanning more than ``1 / eps**2`` cannot be represented."""
    if not isinstance(alpha, Real):  # chosen by validation from a grid including 0
        return
    if alpha == 0:
        return  # singular covariances: check_nonsingular or DegenerateFitWarning
    limit = 1.0 / torch.finfo(dtype).eps ** 2
    n_samples = Xc.shape[0]
    total = float(np.einsum("ij,ij->", Xc, Xc)) / n_samples  # >= largest variance
    if (total + alpha) / alpha <= limit:
        return
    variances = np.linalg.eigvalsh(Xc.T @ Xc / n_samples)
    largest = variances.max()
    # Eigenvalues below ~eps * largest are zero within their rounding error.
    smallest = variances.min()
    if smallest <= variances.size * np.finfo(float).eps * largest:
        smallest = 0.0
    with np.errstate(over="ignore"):
        ratio = (largest + alpha) / (smallest + alpha)
    if ratio > limit:
        raise ValueError(
            f"The variances of X span too wide a range for a "
            f"{_dtype_name(dtype)} flow trained by gradient descent: the "
            f"largest is {ratio:.3g} times the smallest (floored at alpha={alpha:g}"
            f"), more than 1/eps**2 = {limit:.3g}. Rescale X (e.g. with "
            "sklearn.preprocessing.StandardScaler), increase alpha, or use "
            "flow='linear' with the exact solver.")


def check_finite_scores(flow, Xc):
    """A FloatingPointError unless ``flow`` scores every row of ``Xc`` finitely."""
    with torch.no_grad():
        bytes_per_row = FORWARD_BYTES_PER_FEATURE * Xc.shape[1]
        for x in iter_tensor_chunks(Xc, flow, bytes_per_row=bytes_per_row):
            if not torch.isfinite(log_likelihood(flow, x)).all():
                raise FloatingPointError(
                    "The fitted flow gives non-finite log-likelihoods on its own "
                    "training data. Try a larger alpha or a smaller learning_rate_init.")
