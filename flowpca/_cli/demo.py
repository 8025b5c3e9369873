"""``flowpca demo``: NormalizingFlowPCA against PCA and Isomap on one of the paper's data
sets with known latent factors: a comparison table and a figure."""

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import Isomap

from .._estimator import NormalizingFlowPCA
from .._version import __version__
from ..datasets import make_s_curve_gaussian, make_sine_wave

# name: (generator, description, names of the two latent factors)
DATASETS = {
    "sine-wave": (make_sine_wave, "the paper's 3-D sine wave X = [2 e1, e2 / 2, sin(2 e1)]",
                  ("e1 (along the wave)", "e2 (across it)")),
    "s-curve": (make_s_curve_gaussian, "the paper's 3-D S-curve (Gaussian t)",
                ("t (along the curve)", "height")),
}
# Sizes that run in seconds (quick) or well under a minute (full) on a laptop CPU.
SIZES = {False: {"n_train": 1000, "n_test": 1000, "max_iter": 200},
         True: {"n_train": 500, "n_test": 500, "max_iter": 50}}
FIGURE_NAME = "flowpca_demo.png"


@dataclass
class Result:
    """One method's row of the table."""
    name: str
    seconds: float
    log_likelihood: float  # NaN where the method has no density
    recovery: tuple  # |Spearman| of component i with latent factor i
    components: np.ndarray  # first two components of the test points


def compare(X_train, X_test, latent_test, max_iter, seed, verbose=0):
    """Fit PCA, Isomap and NormalizingFlowPCA with two components each on the training
    points and measure them on the test points.

    Returns
    -------
    results : list of Result
    """
    methods = [
        ("PCA", PCA(n_components=2)),
        ("Isomap (10 neighbours)", Isomap(n_components=2, n_neighbors=10)),
        ("NormalizingFlowPCA", NormalizingFlowPCA(2, max_iter=max_iter, random_state=seed,
                                                  verbose=verbose)),
    ]
    results = []
    for name, model in methods:
        start = time.perf_counter()
        with warnings.catch_warnings():
            # The demo stops at max_iter on purpose: a short run shows the method.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train)
        seconds = time.perf_counter() - start
        components = model.transform(X_test)
        recovery = tuple(abs(spearmanr(components[:, i], latent_test[:, i])[0])
                         for i in range(2))
        log_likelihood = model.score(X_test) if hasattr(model, "score_samples") else np.nan
        results.append(Result(name, seconds, log_likelihood, recovery, components))
    return results


def format_table(results, factors):
    """The comparison as aligned text."""
    header = (f"{'method':<24} {'|rho| factor 1':>15} {'|rho| factor 2':>15} "
              f"{'test log-lik.':>14} {'fit s':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        log_likelihood = "n/a" if np.isnan(r.log_likelihood) else f"{r.log_likelihood:.3f}"
        lines.append(f"{r.name:<24} {r.recovery[0]:>15.3f} {r.recovery[1]:>15.3f} "
                     f"{log_likelihood:>14} {r.seconds:>7.1f}")
    lines += ["",
              f"|rho|: absolute Spearman correlation of component i with latent factor i "
              f"(factor 1: {factors[0]}; factor 2: {factors[1]}), on held-out points; "
              "1 is perfect recovery.",
              "test log-lik.: held-out mean log-likelihood in nats per sample (higher is "
              "better); PCA's is probabilistic PCA's; Isomap has no density."]
    return "\n".join(lines)


def save_figure(path, X_test, latent_test, results, factors):
    """Scatter plots of the test data and of each method's two components, coloured by
    each latent factor; returns False (and writes nothing) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    n_columns = len(results) + 1
    figure = Figure(figsize=(4 * n_columns, 7.5), layout="constrained")
    for row, factor in enumerate(factors):
        colour = latent_test[:, row]
        data_axes = figure.add_subplot(2, n_columns, row * n_columns + 1, projection="3d")
        data_axes.scatter(*X_test.T, c=colour, s=4, cmap="viridis")
        data_axes.set_title(f"test data, colour = {factor}", fontsize=9)
        for column, result in enumerate(results, start=1):
            ax = figure.add_subplot(2, n_columns, row * n_columns + column + 1)
            ax.scatter(*result.components[:, :2].T, c=colour, s=4, cmap="viridis")
            ax.set_title(f"{result.name}: |rho| = {result.recovery[row]:.3f}", fontsize=9)
            ax.set_xlabel("component 1")
            ax.set_ylabel("component 2")
            _show_central(ax, result.components[:, :2])
    figure.suptitle("Components of held-out points coloured by the true latent factors "
                    "(top: factor 1, bottom: factor 2); axes span the central 99% of points")
    figure.savefig(path, dpi=100)
    return True


def _show_central(ax, points):
    """Axis limits around the central 99% of the points on each axis, so that a few
    far-out points (the flow extrapolates in the tails) do not squash the rest."""
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    margin = 0.05 * (high - low)
    ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
    ax.set_ylim(low[1] - margin[1], high[1] + margin[1])


def run_demo(out_dir=".", seed=0, quick=False, dataset="sine-wave", verbose=0):
    """Run the demo: print the comparison table and write the figure to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path, default="."
        Directory of the figure (created if missing).
    seed : int, default=0
        Seed of the data and of the flow.
    quick : bool, default=False
        Fewer points and epochs (seconds instead of tens of seconds).
    dataset : {'sine-wave', 's-curve'}, default='sine-wave'
    verbose : int, default=0
        The flow's ``verbose``.

    Returns
    -------
    figure_path : Path or None
        None when matplotlib is not installed.
    """
    make, description, factors = DATASETS[dataset]
    size = SIZES[quick]
    X, latent = make(size["n_train"] + size["n_test"], random_state=seed)
    n = size["n_train"]
    print(f"flowpca {__version__} demo: {description}, {n} training and {size['n_test']} "
          f"test points, 2 components; the flow trains for at most {size['max_iter']} "
          "epochs.\n", flush=True)
    results = compare(X[:n], X[n:], latent[n:], size["max_iter"], seed, verbose)
    print(format_table(results, factors))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (out_dir / FIGURE_NAME).resolve()
    if not save_figure(path, X[n:], latent[n:], results, factors):
        print('\nNo figure: matplotlib is not installed. Install it with: '
              'pip install "flowpca[plot]"')
        return None
    print(f"\nFigure: {path}")
    return path
