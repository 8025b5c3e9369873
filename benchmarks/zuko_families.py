"""zuko's flows (``flow='nsf'``, ``flow='maf'``): the penalty's cost and digits' density.

Two sections, each writing a Markdown table (with the machine, versions, seeds and
threads) to ``benchmarks/results``:

- ``speed`` -> ``zuko_penalty_speed.md`` (and ``.csv``): milliseconds per training step
  (``penalized_nll`` forward and backward, batch 200, alpha > 0, float64) of NSFFlow and
  MAFFlow (8 layers, the estimator's default ``n_layers``; hidden (64, 64)) on the 3-D
  S-curve (exact penalty, the estimator's choice for D <= 8) and on the 64-D digits
  (Hutchinson, one probe). Rows: no penalty (alpha = 0); the penalty as before
  (reverse-over-reverse, one backward pass per unit vector / probe); the penalty now
  (one batched backward pass over the unit vectors, :class:`flowpca.flows.ZukoFlow`);
  the penalty by forward mode (:func:`torch.func.jvp` on stacked copies of the batch,
  ``||J v||^2``, then one backward pass), the alternative that was measured and not taken.
- ``digits`` -> ``zuko_families.md`` (and ``.csv``): held-out log-likelihood (nats per
  sample, in the standardized units) on scikit-learn's digits, dequantized (uniform
  noise in [0, 1) added to the integer pixels) and standardized with the training
  statistics, 1 297 train / 500 test: ``NormalizingFlowPCA(flow='nsf')`` and
  ``flow='maf'`` against the Gaussian mixture with the best BIC.

Usage: ``python benchmarks/zuko_families.py [speed] [digits] [--threads 1]``.
"""

import argparse
import csv
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits, make_s_curve
from sklearn.mixture import GaussianMixture

import flowpca
from flowpca import NormalizingFlowPCA
from flowpca.flows import MAFFlow, NSFFlow

RESULTS = Path(__file__).parent / "results"
BATCH = 200
ALPHA = 1e-2
N_LAYERS = 8
SEED = 0


def _versions(threads):
    import zuko
    return (f"flowpca {flowpca.__version__}, torch {torch.__version__}, zuko "
            f"{zuko.__version__}, scikit-learn {sklearn.__version__}, numpy "
            f"{np.__version__}, Python {platform.python_version()}; "
            f"{platform.processor() or platform.machine()}, "
            f"{threads} torch thread(s) (OMP_NUM_THREADS as set)")


def _write(name, header, rows, columns):
    RESULTS.mkdir(exist_ok=True)
    lines = header + ["", "| " + " | ".join(title for _, title, _ in columns) + " |",
                      "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns)
                     + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    with open(RESULTS / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[key for key, _, _ in columns])
        writer.writeheader()
        writer.writerows({key: row[key] for key, _, _ in columns} for row in rows)
    print(text)


def digits(seed=SEED, n_train=1297):
    """Dequantized, standardized digits (train statistics): train and test arrays."""
    X = load_digits().data.astype(np.float64)
    rng = np.random.RandomState(seed)
    X = X + rng.uniform(size=X.shape)
    order = rng.permutation(len(X))
    train, test = X[order[:n_train]], X[order[n_train:n_train + 500]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    return (train - mean) / std, (test - mean) / std


# ----------------------------------------------------------------------------- speed
def _loop_penalty(flow, x, method, generator):
    """The penalty as before: one reverse pass with graph per unit vector (exact) or per
    probe (Hutchinson), after one forward pass."""
    leaf = x.detach().requires_grad_(True)
    y, log_abs_det = flow(leaf)
    if method == "exact":
        vectors = torch.eye(x.shape[1], dtype=x.dtype)[:, None, :].expand(-1, x.shape[0], -1)
    else:
        vectors = torch.randn((1,) + x.shape, generator=generator, dtype=x.dtype)
    total = 0.0
    for vector in vectors:
        pulled = torch.autograd.grad(y, leaf, vector, create_graph=True,
                                     retain_graph=True)[0]
        total = total + pulled.pow(2).sum(dim=1)
    return y, log_abs_det, total


def _forward_mode_penalty(flow, x, method, generator):
    """``||J v||^2`` by forward mode on stacked copies of the batch (one per unit vector,
    or one probe), then reverse mode through it."""
    n, D = x.shape
    if method == "exact":
        tangents, copies = torch.eye(D, dtype=x.dtype).repeat_interleave(n, dim=0), D
    else:
        tangents, copies = torch.randn(x.shape, generator=generator, dtype=x.dtype), 1
    y, jv, log_abs_det = torch.func.jvp(lambda z: flow(z), (x.repeat(copies, 1),),
                                        (tangents,), has_aux=True)
    return y[:n], log_abs_det[:n], jv.pow(2).sum(dim=1).reshape(copies, n).sum(dim=0)


def _step(flow, x, alpha, penalty):
    flow.zero_grad(set_to_none=True)
    if penalty is None:
        y, log_abs_det = flow(x)
        frobenius_sq = torch.zeros_like(log_abs_det)
    else:
        y, log_abs_det, frobenius_sq = penalty(flow, x)
    loss = (0.5 * y.pow(2).sum(dim=1) - log_abs_det + 0.5 * alpha * frobenius_sq).mean()
    loss.backward()


def speed(repeats):
    datasets = {
        3: make_s_curve(BATCH, noise=0.05, random_state=SEED)[0],
        64: digits()[0][:BATCH],
    }
    variants = [
        ("alpha = 0 (no penalty)", 0.0, lambda method: None),
        ("penalty, before: one backward pass per vector", ALPHA,
         lambda method: lambda f, x: _loop_penalty(f, x, method, torch.Generator())),
        ("penalty, now: ZukoFlow.forward_and_frobenius_sq", ALPHA,
         lambda method: lambda f, x: f.forward_and_frobenius_sq(
             x, method, 1, torch.Generator())),
        ("penalty by forward mode (torch.func.jvp), not taken", ALPHA,
         lambda method: lambda f, x: _forward_mode_penalty(f, x, method, torch.Generator())),
    ]
    rows = []
    for family, cls in (("nsf", NSFFlow), ("maf", MAFFlow)):
        for D, X in datasets.items():
            x = torch.tensor(X - X.mean(axis=0))
            flow = cls(D, n_layers=N_LAYERS, seed=SEED).standardize_for(x)
            method = "exact" if D <= 8 else "hutchinson"
            for name, alpha, make in variants:
                penalty = make(method)
                _step(flow, x, alpha, penalty)  # warm-up
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    _step(flow, x, alpha, penalty)
                    times.append(time.perf_counter() - start)
                row = {"family": family, "D": D, "method": method if alpha else "-",
                       "variant": name, "ms": 1e3 * statistics.median(times),
                       "ms_min": 1e3 * min(times)}
                rows.append(row)
                print(row, flush=True)
    return rows


def estimator_overhead(n_samples=1000):
    """Fit time of ``NormalizingFlowPCA(flow='nsf', n_layers=3, alpha=0)`` on the S-curve
    for two ``max_iter``: the slope is the cost per training step, the intercept the
    fit's fixed costs (validation, the reference points' Jacobians, the first call)."""
    X = make_s_curve(n_samples, noise=0.05, random_state=SEED)[0]
    steps_per_epoch = -(-n_samples // BATCH)
    seconds = {}
    for max_iter in (5, 10, 30):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            NormalizingFlowPCA(flow="nsf", n_layers=3, alpha=0.0, max_iter=max_iter,
                               random_state=SEED).fit(X)
        seconds[max_iter] = time.perf_counter() - start
    per_step = (seconds[30] - seconds[10]) / (20 * steps_per_epoch)
    fixed = seconds[10] - 10 * steps_per_epoch * per_step
    return (f"Estimator, `NormalizingFlowPCA(flow='nsf', n_layers=3, alpha=0)` on "
            f"{n_samples} S-curve points: fit {seconds[10]:.2f} s for 10 epochs "
            f"({1e3 * seconds[10] / (10 * steps_per_epoch):.1f} ms per step if divided "
            f"naively), {seconds[30]:.2f} s for 30; slope {1e3 * per_step:.1f} ms per "
            f"step, fixed cost of a fit {fixed:.2f} s (the first fit of the process, "
            f"max_iter 5, took {seconds[5]:.2f} s).")


# ----------------------------------------------------------------------------- digits
def digits_density(seed=SEED, max_iter=200):
    X_train, X_test = digits(seed)
    rows = []
    for family in ("nsf", "maf"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = NormalizingFlowPCA(flow=family, max_iter=max_iter,
                                       random_state=seed).fit(X_train)
        rows.append({"model": f"NormalizingFlowPCA(flow='{family}', max_iter={max_iter})",
                     "test": model.score(X_test), "train": model.score(X_train),
                     "epochs": model.n_iter_, "seconds": time.perf_counter() - start})
        print(rows[-1], flush=True)
    start = time.perf_counter()
    mixtures = [GaussianMixture(k, covariance_type="full", reg_covar=1e-3,
                                random_state=seed).fit(X_train) for k in (1, 2, 3, 5, 8)]
    best = min(mixtures, key=lambda m: m.bic(X_train))
    rows.append({"model": f"GaussianMixture(full, best BIC over k in 1,2,3,5,8: "
                          f"k={best.n_components})",
                 "test": best.score(X_test), "train": best.score(X_train), "epochs": 0,
                 "seconds": time.perf_counter() - start})
    print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", default=["speed", "digits"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    versions = _versions(args.threads)
    if "speed" in args.sections:
        rows = speed(args.repeats)
        overhead = estimator_overhead()
        print(overhead)
        _write("zuko_penalty_speed", [
            "# zuko flows: cost of one training step with the Jacobian penalty",
            "",
            f"`python benchmarks/zuko_families.py speed`: {versions}. Median (and min) "
            f"over {args.repeats} steps after one warm-up, batch {BATCH}, float64, "
            f"{N_LAYERS} layers, hidden (64, 64), init seed {SEED}, alpha {ALPHA} "
            "where penalized. D = 3: scikit-learn's S-curve (noise 0.05, seed 0), exact "
            "penalty (D vectors); D = 64: digits (dequantized, standardized), Hutchinson "
            "with one probe. All penalty variants compute the same per-row value "
            "(exact: equal to 1e-15 relative; Hutchinson: same distribution).",
            "", overhead,
        ], rows, [("family", "flow", "{}"), ("D", "D", "{}"), ("method", "penalty", "{}"),
                  ("variant", "variant", "{}"), ("ms", "ms/step (median)", "{:.1f}"),
                  ("ms_min", "ms/step (min)", "{:.1f}")])
    if "digits" in args.sections:
        rows = digits_density(max_iter=args.max_iter)
        _write("zuko_families", [
            "# zuko flows on digits: held-out log-likelihood",
            "",
            f"`python benchmarks/zuko_families.py digits`: {versions}. scikit-learn's "
            "digits, uniform dequantization noise then standardization with the "
            f"training statistics (seed {SEED}), 1 297 train / 500 test; nats per sample "
            "in standardized units (higher is better). Estimators with their defaults "
            f"(alpha 5e-5, n_layers 8, Hutchinson penalty at D = 64) but max_iter "
            f"{args.max_iter}, random_state {SEED}.",
        ], rows, [("model", "model", "{}"), ("test", "test nats/sample", "{:.2f}"),
                  ("train", "train nats/sample", "{:.2f}"), ("epochs", "epochs", "{}"),
                  ("seconds", "fit seconds", "{:.0f}")])


if __name__ == "__main__":
    main()
