"""Scores of a fitted method on a test set: held-out log-likelihood, latent-factor
recovery, trustworthiness and reconstruction error; of a density model's samples: their
distance to the true manifold."""

import numpy as np
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness


def mean_log_likelihood(log_densities):
    """Mean held-out log-likelihood in nats per sample (nan when there is none)."""
    log_densities = np.asarray(log_densities, dtype=float)
    return float(np.mean(log_densities)) if log_densities.size else float("nan")


def factor_recovery(components, latent):
    """For each true factor, the largest ``|Spearman rho|`` over the given components.

    Parameters
    ----------
    components : ndarray of shape (n, k)
        The method's first ``k`` components of the test points.
    latent : ndarray of shape (n, n_factors)
        True latent factors of the same points.

    Returns
    -------
    recovery : ndarray of shape (n_factors,)
    """
    best = np.zeros(latent.shape[1])
    for j in range(latent.shape[1]):
        for i in range(components.shape[1]):
            rho = spearmanr(components[:, i], latent[:, j])[0]
            if np.isfinite(rho):
                best[j] = max(best[j], abs(rho))
    return best


def trust(X, components, n_neighbors=10):
    """:func:`sklearn.manifold.trustworthiness` of the embedding (1 is best)."""
    n_neighbors = min(n_neighbors, (X.shape[0] - 1) // 2)
    return float(trustworthiness(X, components, n_neighbors=n_neighbors))


def relative_reconstruction_error(X, X_hat):
    """``mean ||x - x_hat||^2 / mean ||x - mean(x)||^2``: the fraction of the test set's
    variance that the reconstruction from ``k`` components misses."""
    total = np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=1))
    return float(np.mean(np.sum((X - X_hat) ** 2, axis=1)) / total)


def off_manifold_distances(samples, manifold_distance):
    """Mean and median Euclidean distance of ``samples`` to the true manifold.

    Parameters
    ----------
    samples : ndarray of shape (n, n_features)
        Draws from a fitted density model.
    manifold_distance : callable
        ``manifold_distance(X) -> (n,)``, e.g. a data set's ``manifold_distance``.

    Returns
    -------
    mean, median : float
        The mean is ``inf`` where the distances overflow (far tails of a flow).

    Raises
    ------
    ValueError
        If a sample is not finite (its distance is not defined).
    """
    samples = np.asarray(samples, dtype=float)
    if not np.isfinite(samples).all():
        n_bad = int((~np.isfinite(samples).all(axis=1)).sum())
        raise ValueError(f"{n_bad} of {samples.shape[0]} samples are not finite")
    with np.errstate(over="ignore", invalid="ignore"):
        distances = manifold_distance(samples)
        return float(np.mean(distances)), float(np.median(distances))
