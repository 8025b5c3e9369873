"""Command line: ``python -m flowpca demo``."""

import argparse
import sys
import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

from . import NormalizingFlowPCA, __version__
from .datasets import make_s_curve_gaussian


def _recovery(components, latent):
    """|Spearman| of each of the first two components with its latent factor."""
    return [abs(spearmanr(components[:, i], latent[:, i])[0]) for i in range(2)]


def run_demo(n_samples=2000, random_state=0, out=sys.stdout):
    """Fit PCA, the linear flow and the default flow on the paper's S-curve and print a
    comparison table."""
    X, latent = make_s_curve_gaussian(n_samples + 1000, random_state=random_state)
    X_train, X_test = X[:n_samples], X[n_samples:]
    latent_test = latent[n_samples:]
    print(f"flowpca {__version__} demo: the S-curve of Feinman & Parthasarathy (2020), "
          f"{n_samples} training / 1000 test points, 3-D with 2 latent factors "
          "(t along the curve, height).\n", file=out)
    header = (f"{'model':<30} {'fit s':>7} {'test LL (nats)':>15} {'variances':>26} "
              f"{'|rho| t':>8} {'|rho| h':>8}")
    print(header, file=out)
    print("-" * len(header), file=out)

    start = time.perf_counter()
    pca = PCA().fit(X_train)
    seconds = time.perf_counter() - start
    variances = " ".join(f"{v:.3g}" for v in pca.explained_variance_)
    rho = _recovery(pca.transform(X_test), latent_test)
    print(f"{'PCA':<30} {seconds:>7.2f} {'(none)':>15} {variances:>26} "
          f"{rho[0]:>8.3f} {rho[1]:>8.3f}", file=out)

    for name, model in [
        ("NormalizingFlowPCA(linear)", NormalizingFlowPCA(flow="linear")),
        ("NormalizingFlowPCA()", NormalizingFlowPCA(random_state=random_state)),
    ]:
        start = time.perf_counter()
        model.fit(X_train)
        seconds = time.perf_counter() - start
        variances = " ".join(f"{v:.3g}" for v in model.explained_variance_)
        rho = _recovery(model.transform(X_test), latent_test)
        print(f"{name:<30} {seconds:>7.2f} {model.score(X_test):>15.3f} {variances:>26} "
              f"{rho[0]:>8.3f} {rho[1]:>8.3f}", file=out)
    print("\ntest LL: held-out mean log-likelihood (higher is better); |rho|: Spearman "
          "correlation of component 1 with t and component 2 with the height.", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flowpca", description="Nonlinear PCA with a density model (normalizing flows).")
    parser.add_argument("--version", action="version", version=f"flowpca {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit PCA and flows on the paper's S-curve and "
                                            "print a comparison table")
    demo.add_argument("--n-samples", type=int, default=2000, help="training points")
    demo.add_argument("--random-state", type=int, default=0, help="seed")
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(n_samples=args.n_samples, random_state=args.random_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
