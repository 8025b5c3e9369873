"""Latent-factor recovery of the default NormalizingFlowPCA, data seed by data seed.

For each seed (the same seed draws the data and seeds the model):

- the paper's S-curve (Gaussian t, docs/contributing.rst; ``n_train`` training and 1000
  test points): |Spearman| of component 1 with t and of component 2 with the height (test
  points); the third component's local variance against the second's, as the ratio of
  the means (``explained_variance_[1] / explained_variance_[2]``, over the training data)
  and as the median over training points of the pointwise ratio; the fraction of
  training points that ``inverse_transform(transform(X))`` brings back within relative
  error 1e-4 (all components), and how many points its warning reports as unconverged;
  the fit's wall and CPU seconds;
- the paper's sine wave: the same for components 1 and 2 with e1 and e2 (test points);
- scikit-learn's ``make_s_curve`` (uniform t, noise 0.05): components 1 and 2 against t
  and the height, for the default estimator and for Isomap (10 neighbours).

Prints a Markdown table and writes it with the machine, versions and seeds to
``benchmarks/results/s_curve_recovery.md`` (and ``.csv``). Asserts nothing.
Seeds run in parallel processes (``--jobs``), each with ``--threads`` torch threads.
Usage: ``python benchmarks/s_curve_recovery.py [--quick] [--seeds 0 1 2] [--jobs 3]
[--threads 1]``.
"""

import argparse
import csv
import multiprocessing
import platform
import re
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import sklearn
import torch
from scipy.stats import spearmanr
from sklearn.datasets import make_s_curve
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import Isomap

import flowpca
from flowpca import NormalizingFlowPCA
from flowpca.datasets import make_s_curve_gaussian, make_sine_wave

RESULTS = Path(__file__).parent / "results"
N_TEST = 1000
ROUND_TRIP_RTOL = 1e-4

COLUMNS = [
    ("seed", "seed", "{:d}"),
    ("t", "t (abs Spearman)", "{:.3f}"),
    ("height", "height (abs Spearman)", "{:.3f}"),
    ("mean_ratio", "mean var2/var3", "{:.0f}"),
    ("median_ratio", "median var2/var3", "{:.0f}"),
    ("round_trip", "round trip <= 1e-4", "{:.4f}"),
    ("unconverged", "warned unconverged", "{:d}"),
    ("sine_1", "sine comp 1 vs e1", "{:.3f}"),
    ("sine_2", "sine comp 2 vs e2", "{:.3f}"),
    ("sk_t", "make_s_curve t (flow)", "{:.3f}"),
    ("sk_height", "make_s_curve height (flow)", "{:.3f}"),
    ("iso_t", "make_s_curve t (Isomap)", "{:.3f}"),
    ("iso_height", "make_s_curve height (Isomap)", "{:.3f}"),
    ("fit_s", "S-curve fit s (wall)", "{:.1f}"),
    ("fit_cpu_s", "S-curve fit s (CPU)", "{:.1f}"),
    ("n_iter", "epochs", "{:d}"),
]


def abs_spearman(a, b):
    return float(abs(spearmanr(a, b)[0]))


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(X)
        return time.perf_counter() - start, time.process_time() - cpu


def round_trip(model, X):
    """Fraction of rows of X brought back within ROUND_TRIP_RTOL, and the number of
    rows the ConvergenceWarning reports."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        back = model.inverse_transform(model.transform(X))
    error = np.linalg.norm(back - X, axis=1) / np.linalg.norm(X - model.mean_, axis=1)
    unconverged = 0
    for warning in caught:
        match = re.search(r"did not converge for (\d+) of", str(warning.message))
        unconverged += int(match.group(1)) if match else 0
    return float(np.mean(error <= ROUND_TRIP_RTOL)), unconverged


def paper_s_curve(seed, n_train):
    X, latent = make_s_curve_gaussian(n_train + N_TEST, random_state=seed)
    X_train, X_test = X[:n_train], X[n_train:]
    model = NormalizingFlowPCA(n_components=3, random_state=seed, flow="mlp")
    wall, cpu = fit_quietly(model, X_train)
    Y = model.transform(X_test)
    variances = model.local_variances(X_train)
    fraction, unconverged = round_trip(model, X_train)
    return {
        "t": abs_spearman(Y[:, 0], latent[n_train:, 0]),
        "height": abs_spearman(Y[:, 1], latent[n_train:, 1]),
        "mean_ratio": model.explained_variance_[1] / model.explained_variance_[2],
        "median_ratio": float(np.median(variances[:, 1] / variances[:, 2])),
        "round_trip": fraction, "unconverged": unconverged,
        "fit_s": wall, "fit_cpu_s": cpu, "n_iter": model.n_iter_,
    }


def sine_wave(seed, n_train):
    X, latent = make_sine_wave(n_train + N_TEST, random_state=seed)
    model = NormalizingFlowPCA(n_components=2, random_state=seed, flow="mlp")
    fit_quietly(model, X[:n_train])
    Y = model.transform(X[n_train:])
    return {"sine_1": abs_spearman(Y[:, 0], latent[n_train:, 0]),
            "sine_2": abs_spearman(Y[:, 1], latent[n_train:, 1])}


def sklearn_s_curve(seed, n_train):
    X, t = make_s_curve(n_train + N_TEST, noise=0.05, random_state=seed)
    latent = np.column_stack([t, X[:, 1]])[n_train:]  # t along the curve, the height
    out = {}
    for prefix, model in [("sk", NormalizingFlowPCA(n_components=2, random_state=seed, flow="mlp")),
                          ("iso", Isomap(n_components=2, n_neighbors=10))]:
        fit_quietly(model, X[:n_train])
        Y = model.transform(X[n_train:])
        out[f"{prefix}_t"] = abs_spearman(Y[:, 0], latent[:, 0])
        out[f"{prefix}_height"] = abs_spearman(Y[:, 1], latent[:, 1])
    return out


def run_seed(seed, n_train, threads):
    torch.set_num_threads(threads)
    row = {"seed": seed}
    row.update(paper_s_curve(seed, n_train))
    row.update(sine_wave(seed, n_train))
    row.update(sklearn_s_curve(seed, n_train))
    print(row, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, 1000 training points; writes *_quick.md/csv")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per seed")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel")
    args = parser.parse_args()
    seeds, n_train = ([args.seeds[0]], 1000) if args.quick else (args.seeds, args.n_train)
    tasks = [(seed, n_train, args.threads) for seed in seeds]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.starmap(run_seed, tasks)
    else:
        rows = [run_seed(*task) for task in tasks]
    torch.set_num_threads(args.threads)

    header = (
        "# S-curve recovery of the default NormalizingFlowPCA\n\n"
        f"- flowpca {flowpca.__version__}, torch {torch.__version__}, scikit-learn "
        f"{sklearn.__version__}, numpy {np.__version__}, scipy {scipy.__version__}; "
        f"{args.threads} torch thread(s) per seed, {args.jobs} seed(s) at a time; "
        f"{platform.platform()}, "
        f"{platform.processor() or platform.machine()}\n"
        f"- data seeds {seeds} (each seed also seeds the model, `random_state=seed`); "
        f"{n_train} training and {N_TEST} test points per data set\n"
        "- paper S-curve (Gaussian t, docs/contributing.rst): `NormalizingFlowPCA("
        "n_components=3)`; t, height: absolute Spearman correlation on the test points of "
        "component 1 with t and of component 2 with the height; var2/var3: second "
        "over third local variance, "
        "ratio of the means over the training data (`explained_variance_`) and median "
        "of the pointwise ratio; round trip: fraction of training points with "
        "`norm(inverse_transform(transform(x)) - x) <= 1e-4 norm(x - mean_)`; warned "
        "unconverged: the points inverse_transform's ConvergenceWarning reports\n"
        "- sine: the paper's sine wave, `n_components=2`, components vs e1, e2; "
        "make_s_curve: scikit-learn's (uniform t, noise 0.05), components vs t and the "
        "height, default flow vs `Isomap(n_neighbors=10)`\n"
        "- fit seconds: wall and CPU (all threads) of the S-curve fit; this machine is "
        "shared, so the CPU time is the steadier number\n\n")
    table = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "---:|" * len(COLUMNS)]
    table += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |"
              for row in rows]
    text = header + "\n".join(table) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = "s_curve_recovery_quick" if args.quick else "s_curve_recovery"
    (RESULTS / f"{stem}.md").write_text(text)
    with open(RESULTS / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[key for key, _, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
