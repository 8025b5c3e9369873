"""The likelihood optimum of the linear flow, in closed form: a baseline for any flow.

With the penalty ``alpha/2 ||J||_F^2`` the linear flow's optimum is the Gaussian with the
data's mean and covariance ``Sigma_hat + alpha I`` (docs/user_guide/theory.rst); its mean
log-likelihood on the training data follows from the eigenvalues ``lambda_i`` of
``Sigma_hat`` alone:

``-D/2 log(2 pi) - 1/2 sum_i log(lambda_i + alpha) - 1/2 sum_i lambda_i / (lambda_i + alpha)``.

The likelihood optimum of a flow is bounded by this spectrum (a link to probabilistic
PCA), so the gain of a fitted flow over it, in nats per sample, says how much the
nonlinearity bought: 0 for the linear flow at its optimum, positive where the data are
not Gaussian.
"""

import math

import numpy as np


class GaussianBaseline:
    """The linear flow's optimum for training data ``X``: ``N(mean, Sigma_hat + alpha I)``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Training data (any centering: the baseline fits its own mean).
    alpha : float
        The variance floor.
    n_components : int, optional
        Restrict the Gaussian to its ``n_components`` leading principal axes: the density
        on that subspace of the projection of a point (the baseline of an injective flow
        with a ``n_components``-dimensional latent). None keeps all axes.

    Attributes
    ----------
    alpha : float
    mean : ndarray of shape (n_features,)
    variances : ndarray of shape (k,)
        Eigenvalues of ``Sigma_hat + alpha I`` kept, largest first.
    directions : ndarray of shape (k, n_features)
        The corresponding orthonormal eigenvectors (rows).
    """

    def __init__(self, X, alpha, n_components=None):
        X = np.asarray(X, dtype=np.float64)
        self.mean = X.mean(axis=0)
        centered = X - self.mean
        eigenvalues, vectors = np.linalg.eigh(centered.T @ centered / X.shape[0])
        order = np.argsort(eigenvalues)[::-1][:n_components]
        # Eigenvalues of a covariance are >= 0: negative ones are rounding.
        self.alpha = float(alpha)
        self.variances = np.clip(eigenvalues[order], 0.0, None) + self.alpha
        self.directions = vectors[:, order].T

    def score_samples(self, X):
        """Log-density of each row of ``X`` (on the subspace for ``n_components``).

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
            ``+inf`` on the training data's span when a variance is zero (``alpha=0``
            with a singular covariance: the Gaussian optimum is unbounded there).
        """
        k = self.variances.size
        with np.errstate(divide="ignore", invalid="ignore"):
            projected = (np.asarray(X, dtype=np.float64) - self.mean) @ self.directions.T
            squared = np.where(projected == 0, 0.0, projected**2 / self.variances)
            log_det = np.sum(np.log(self.variances))
        return -0.5 * (k * math.log(2 * math.pi) + log_det + squared.sum(axis=1))

    def training_score(self):
        """Mean log-likelihood on the training data, in closed form from the spectrum:
        ``-1/2 (k log 2 pi + sum log(lambda + alpha) + sum lambda / (lambda + alpha))``;
        ``+inf`` when a variance is zero."""
        if np.any(self.variances <= 0):
            return math.inf
        explained = (self.variances - self.alpha) / self.variances
        return -0.5 * (self.variances.size * math.log(2 * math.pi)
                       + float(np.sum(np.log(self.variances))) + float(np.sum(explained)))


def gaussian_baseline(X_train, alpha, n_components=None):
    """:class:`GaussianBaseline` of ``X_train`` (see there)."""
    return GaussianBaseline(X_train, alpha, n_components)
