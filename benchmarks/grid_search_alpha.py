"""Choose the Tikhonov weight ``alpha`` of NormalizingFlowPCA with GridSearchCV.

A worked example: a log-spaced grid of alpha, 3-fold cross-validation scored by the
estimator's own ``score`` (mean held-out log-likelihood, nats/sample), on scikit-learn's
digits (64-D, dequantized, all classes: see ``datasets.py``). Prints the grid's scores
and the chosen alpha; writes ``grid_search_alpha.md`` and the validation curve
``grid_search_alpha.png`` (``*_quick.*`` with ``--quick``) under ``--out``.

Usage: ``python benchmarks/grid_search_alpha.py [--quick] [--threads 1] [--out DIR]``.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]

import datasets  # noqa: E402
from _figures import validation_curve_figure  # noqa: E402
from _report import environment, header_lines, limited_threads  # noqa: E402

from flowpca import NormalizingFlowPCA  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few points, two alphas")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args.threads)
    data = datasets.load("digits", quick=args.quick)
    alphas = np.logspace(-4, -2, 2) if args.quick else np.logspace(-6, -1, 6)
    estimator = NormalizingFlowPCA(n_components=10, n_layers=6,
                                   max_iter=3 if args.quick else 100, random_state=0, flow="mlp")
    search = GridSearchCV(estimator, {"alpha": alphas},
                          cv=KFold(3, shuffle=True, random_state=0), error_score=np.nan)
    start = time.perf_counter()
    with limited_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(data.X_train)
        test_score = search.score(data.X_test)
    seconds = time.perf_counter() - start
    chosen = search.best_params_["alpha"]
    mean = search.cv_results_["mean_test_score"]
    std = search.cv_results_["std_test_score"]
    suffix = "_quick" if args.quick else ""
    validation_curve_figure(args.out / f"grid_search_alpha{suffix}.png", alphas, mean, std,
                            chosen, "GridSearchCV over alpha: digits (64-D), 3-fold CV")
    lines = [f"# GridSearchCV over alpha{' (quick)' if args.quick else ''}", "",
             *header_lines(env),
             f"- data: {data.description}, {data.X_train.shape[0]} training points "
             f"(cross-validated) and {data.X_test.shape[0]} test points; seed {data.seed}",
             f"- estimator: {estimator!r}", "- 3-fold KFold(shuffle, random_state=0); "
             f"score = mean held-out log-likelihood (nats/sample); wall time {seconds:.0f} s",
             "", "| alpha | mean CV score | std |", "|---:|---:|---:|"]
    lines += [f"| {a:.1e} | {m:.3f} | {s:.3f} |" for a, m, s in zip(alphas, mean, std)]
    lines += ["", f"Chosen alpha: {chosen:.1e}; refitted on all training points, its "
              f"test log-likelihood is {test_score:.3f} nats/sample.", "",
              f"Figure: grid_search_alpha{suffix}.png", ""]
    text = "\n".join(lines)
    print(text)
    (args.out / f"grid_search_alpha{suffix}.md").write_text(text)


if __name__ == "__main__":
    main()
