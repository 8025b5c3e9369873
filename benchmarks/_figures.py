"""Figures of the paper reproduction and the alpha search (matplotlib, Agg backend)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def grid_rows(latent, per_axis=(7, 4)):
    """Indices of the points nearest a grid of quantiles of the first two latent
    factors (where the arrows of the component figures are drawn)."""
    ranks = np.argsort(np.argsort(latent[:, :2], axis=0), axis=0) / (latent.shape[0] - 1)
    rows = []
    for a in np.linspace(0.05, 0.95, per_axis[0]):
        for b in np.linspace(0.1, 0.9, per_axis[1]):
            rows.append(int(np.argmin((ranks[:, 0] - a) ** 2 + (ranks[:, 1] - b) ** 2)))
    return np.unique(rows)


def component_figure(path, X, components, directions, arrow_rows, title):
    """Fig. 3 of the paper: the data coloured by components 1 and 2, with the local
    principal direction of each drawn as arrows at ``arrow_rows``.

    Parameters
    ----------
    path : Path
    X : ndarray of shape (n, 3)
    components : ndarray of shape (n, >= 2)
    directions : ndarray of shape (len(arrow_rows), 3, >= 2)
        Local directions (unit columns) at ``X[arrow_rows]``.
    arrow_rows : ndarray of int
    title : str
    """
    fig = plt.figure(figsize=(11, 5))
    length = 0.15 * np.ptp(X, axis=0).max()
    for i in range(2):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        # Robust colour limits: un-whitened components can be large in the tails.
        low, high = np.percentile(components[:, i], [2, 98])
        points = ax.scatter(X[:, 0], X[:, 1], X[:, 2], c=components[:, i], s=3,
                            cmap="viridis", alpha=0.6, vmin=low, vmax=high)
        P, V = X[arrow_rows], directions[:, :, i] * length
        ax.quiver(P[:, 0], P[:, 1], P[:, 2], V[:, 0], V[:, 1], V[:, 2], color="red",
                  linewidth=1.2)
        ax.set_title(f"colour: component {i + 1}; arrows: local direction {i + 1}")
        ax.view_init(elev=20, azim=-70)
        ranges = np.ptp(X, axis=0)
        ax.set_box_aspect(np.maximum(ranges, 0.25 * ranges.max()))  # arrows keep angles
        fig.colorbar(points, ax=ax, shrink=0.6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def local_variance_figure(path, spectra):
    """Local variance spectra, one panel per model: the median over points of each
    sorted local variance with its 10-90 % band, and the floor ``alpha``.

    Parameters
    ----------
    path : Path
    spectra : list of (title, variances (n, D), alpha)
    """
    fig, axes = plt.subplots(1, len(spectra), figsize=(4.5 * len(spectra), 3.8),
                             squeeze=False)
    for ax, (title, variances, alpha) in zip(axes[0], spectra):
        index = np.arange(1, variances.shape[1] + 1)
        low, mid, high = np.quantile(variances, [0.1, 0.5, 0.9], axis=0)
        ax.fill_between(index, low, high, alpha=0.3, label="10-90 % of points")
        ax.plot(index, mid, "o-", ms=3, label="median")
        if alpha > 0:
            ax.axhline(alpha, color="k", ls="--", label=f"alpha = {alpha:g}")
        ax.set_yscale("log")
        ax.set_xlabel("component")
        ax.set_ylabel("local variance")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curve_figure(path, curves, title):
    """Train and validation log-likelihood against epochs, one colour per setting.

    Parameters
    ----------
    path : Path
    curves : dict label -> (epochs, train LL, validation LL)
    title : str
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for color, (label, (epochs, train, val)) in zip(plt.cm.tab10.colors, curves.items()):
        ax.plot(epochs, train, "-o", ms=3, color=color, label=f"{label}: train")
        ax.plot(epochs, val, "--s", ms=3, color=color, label=f"{label}: validation")
    ax.set_xlabel("epochs")
    ax.set_ylabel("mean log-likelihood (nats)")
    finite = [v for _, tr, va in curves.values() for v in (*tr, *va) if np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 0.05 * np.ptp(finite), max(finite) + 0.05 * np.ptp(finite))
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def validation_curve_figure(path, alphas, mean, std, chosen, title):
    """GridSearchCV's mean test score (held-out log-likelihood) against alpha."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(alphas, mean, yerr=std, fmt="o-", capsize=3)
    ax.axvline(chosen, color="k", ls="--", label=f"chosen alpha = {chosen:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("alpha")
    ax.set_ylabel("held-out log-likelihood (nats/sample)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
