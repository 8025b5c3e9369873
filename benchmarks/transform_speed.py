"""Throughput of ``transform`` and the local diagnostics: 'full' vs 'randomized' vs naive.

For a fitted :class:`flowpca.NormalizingFlowPCA` with an 8-layer MLP flow, times (points
per second, median over repeats after a warm-up) at D = 3, 64, 784:

- ``transform`` with ``svd_solver='full'`` (per-point Jacobian pushed through the layers,
  ``torch.linalg.svd``) and, where ``k << D`` (D = 64, k = 4; D = 784, k = 5),
  ``svd_solver='randomized'`` (subspace iteration with inverse-Jacobian-vector products);
- ``local_directions`` with the same two solvers;
- ``local_variances`` and ``local_covariance``, which always take the full per-point SVD
  (``svd_solver`` does not apply to them);
- naive: ``transform`` done by hand, per-sample ``torch.func.vmap(torch.func.jacrev(f))``
  Jacobian + ``torch.linalg.svd`` + ``S^-1 U^T f(x)`` on the top ``k`` components (no
  sign orientation, no chunking). "ratio vs naive" is points/s of the row over points/s
  of this baseline at the same D.

Each (D, method, op) runs in a fresh subprocess that loads the pickled model, so its peak
memory is the increase of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` over the value
after loading the model and the data (a lower bound: 0 means the operation stayed below
the process's earlier high-water mark). Fitting is not timed: models are fitted once per D
with ``n_layers=8, max_iter=1, learning_rate_init=1e-4, random_state=seed`` and
``svd_solver='full'`` from an initial flow ``MLPFlow.from_data`` on 2000 rows; the
randomized rows use the same fitted model with ``set_params(svd_solver='randomized')``.

Usage::

    python benchmarks/transform_speed.py --threads 1     # a few minutes
    python benchmarks/transform_speed.py --quick         # smaller n, fewer repeats

Writes ``benchmarks/results/<name>.md`` and ``<name>.csv`` (and ``<name>.png`` when
matplotlib is installed), ``<name>`` being ``transform_speed`` unless ``--name`` is given.
Asserts nothing.
"""

import argparse
import csv
import datetime
import json
import math
import os
import pickle
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import scipy
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning

import flowpca
from flowpca import NormalizingFlowPCA
from flowpca.flows import MLPFlow

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

N_LAYERS = 8
ALPHA = 5e-5  # the estimator's default
# Rows the initial flow (MLPFlow.from_data) is whitened on: more than D, so that its
# covariance is full rank at D = 784.
N_INIT = 2000
# One Adam epoch at the default learning_rate_init=1e-2 moves every entry of the 784 x 784
# weights by ~1e-2 and leaves a degenerate flow (Jacobian condition ~1e15, transform
# values ~1e12, 'full' and 'randomized' disagreeing); 1e-4 keeps it near its initial flow.
LEARNING_RATE = 1e-4
OPS = ("transform", "local_directions", "local_variances", "local_covariance")
# Rows compared with the full-SVD path on a few points (max |.| deviation, signs ignored).
N_CHECK = 8
# Timed repeats per row: at most MAX_REPEATS, at least MIN_REPEATS, and no new repeat
# once BUDGET_S seconds have been spent.
MAX_REPEATS, MIN_REPEATS, BUDGET_S = 20, 3, 5.0


def plan(quick):
    """Per D: points timed, components k, training rows, most repeats, whether the
    randomized solver is timed."""
    if quick:
        return [
            dict(D=3, n=1000, k=2, n_train=1000, repeats=5, randomized=False),
            dict(D=64, n=200, k=4, n_train=500, repeats=2, randomized=True),
            dict(D=784, n=4, k=5, n_train=16, repeats=1, randomized=True),
        ]
    return [
        dict(D=3, n=1000, k=2, n_train=1000, repeats=MAX_REPEATS, randomized=False),
        dict(D=64, n=1000, k=4, n_train=1000, repeats=MAX_REPEATS, randomized=True),
        dict(D=784, n=16, k=5, n_train=32, repeats=MAX_REPEATS, randomized=True),
    ]


def make_data(n_samples, n_features, rank, seed):
    """Low-rank Gaussian ``L = Z A`` (rank ``rank``) bent by ``0.5 sin(L)``, plus
    isotropic noise of standard deviation 0.05."""
    rng = np.random.RandomState(seed)
    mixing = rng.normal(size=(rank, n_features)) / math.sqrt(rank)
    Z = rng.normal(size=(n_samples, rank))
    L = Z @ mixing
    return L + 0.5 * np.sin(L) + 0.05 * rng.normal(size=(n_samples, n_features))


def naive_transform(model, X):
    """``S^-1 U^T f(x)`` of the top ``k`` components from per-sample autodiff Jacobians."""
    flow, k = model.flow_, model.n_components_
    x = torch.as_tensor(X - model.mean_, dtype=next(flow.parameters()).dtype)

    def single(row):
        return flow._map(row.unsqueeze(0)).squeeze(0)

    jacobian = torch.func.vmap(torch.func.jacrev(single))(x)
    U, s, _ = torch.linalg.svd(jacobian)
    # Largest local variance = smallest singular value: the last k, reversed.
    U_k, s_k = U[..., -k:].flip(-1), s[:, -k:].flip(-1)
    y = flow._map(x)
    return (torch.einsum("nji,nj->ni", U_k, y) / s_k).detach().numpy()


def _max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _proc_status_mb(key):
    """``VmRSS`` / ``VmHWM`` of this process in MiB from /proc, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``); False where unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_mb("VmHWM") is not None


def worker(config):
    """Time one (D, method, op) in this (fresh) process; print a JSON line."""
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])  # start of the randomized subspace
    with open(config["model"], "rb") as f:
        model = pickle.load(f)
    X = np.load(config["data"])
    method, op = config["method"], config["op"]
    if method == "naive":
        def run(rows):
            return naive_transform(model, rows)
    else:
        model.set_params(svd_solver=method)
        run = getattr(model, op)
    run(X[:config["warmup_rows"]])
    # Peak memory of the timed calls over the RSS just before them.
    # ru_maxrss itself is no good here: it never drops below the parent's RSS at the
    # fork/exec that started this worker. VmHWM is this process's own high-water mark.
    if _reset_peak_rss():
        memory, before = "VmHWM after reset - VmRSS", _proc_status_mb("VmRSS")
        peak_mb = lambda: _proc_status_mb("VmHWM")  # noqa: E731
    else:
        memory, before = "ru_maxrss delta (lower bound)", _max_rss_mb()
        peak_mb = _max_rss_mb
    times, spent = [], 0.0
    while len(times) < config["repeats"] and (len(times) < config["min_repeats"]
                                              or spent < config["budget_s"]):
        start = time.perf_counter()
        out = run(X)
        times.append(time.perf_counter() - start)
        spent += times[-1]
    peak = peak_mb() - before
    check = float("nan")
    if method in ("naive", "randomized"):
        m = min(N_CHECK, X.shape[0])
        model.set_params(svd_solver="full")
        reference = getattr(model, "transform" if method == "naive" else op)(X[:m])
        check = float(np.max(np.abs(np.abs(out[:m]) - np.abs(reference)))
                      / np.max(np.abs(reference)))
    print(json.dumps({"median_s": statistics.median(times), "times": times,
                      "peak_mb": peak, "memory": memory, "check": check}))


def header(args, sizes):
    d784 = next((p for p in sizes if p["D"] == 784), None)
    lines = [
        "# NormalizingFlowPCA: points per second of transform and the local diagnostics",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- flowpca {flowpca.__version__}, torch {torch.__version__}, numpy "
        f"{np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}",
        f"- torch.get_num_threads() = {torch.get_num_threads()} (parent and every worker; "
        f"load average at start: {', '.join(f'{v:.1f}' for v in os.getloadavg())})",
        f"- platform: {platform.platform()}, processor: {platform.processor() or 'n/a'}, "
        f"cpu count: {os.cpu_count()}, python {platform.python_version()}",
        f"- seed: {args.seed} (data: numpy RandomState(seed), one stream per D: the first "
        f"max(n_train, {N_INIT}) rows whiten the initial flow, the first n_train of them "
        "fit it, the timed rows come after; model: random_state=seed, initial-flow noise "
        "torch.Generator().manual_seed(seed); randomized start: torch.manual_seed(seed) "
        "in each worker)",
        f"- model: NormalizingFlowPCA(flow=MLPFlow.from_data(init rows, alpha={ALPHA}, "
        f"n_layers={N_LAYERS}), max_iter=1, learning_rate_init={LEARNING_RATE:g}, "
        "random_state=seed, n_components=k, svd_solver='full').fit(training rows), "
        "float64 on CPU; data: a rank-k Gaussian L bent by 0.5 sin(L), plus noise 0.05. "
        "learning_rate_init is lowered from 1e-2 because one Adam step at 1e-2 leaves a "
        "degenerate flow at D = 784 (Jacobian condition ~1e15, transform values ~1e12). "
        "'randomized' rows reuse the fitted model with "
        "set_params(svd_solver='randomized') (defaults: 10 oversamples, 30 subspace "
        "iterations)",
        "- per D: " + "; ".join(f"D={p['D']}: n={p['n']} timed points, fit on "
                                f"{p['n_train']} rows, at most {p['repeats']} repeats"
                                for p in sizes),
    ]
    if d784 is not None and d784["n"] < 1000:
        lines.append(f"- D = 784 uses n = {d784['n']} timed points and {d784['n_train']} "
                     "training rows so that the whole run fits in ~8 minutes: one point "
                     "costs a 784-column Jacobian through 9 layers plus a 784 x 784 SVD, "
                     "and fit takes three such passes over the training rows")
    lines += [
        "- median wall time over the repeats (at least "
        f"{MIN_REPEATS} where allowed; no new repeat once {BUDGET_S:g} s are spent) after "
        "one warm-up call on n/50 rows (at least 1); points/s = n / median",
        "- local_variances and local_covariance always use the full per-point SVD "
        "(svd_solver does not apply), so they have no 'randomized' row",
        "- naive: per-sample `torch.func.vmap(torch.func.jacrev(f))` Jacobian + "
        "`torch.linalg.svd` + `S^-1 U^T f(x)` (top k, no sign orientation, no chunking); "
        "ratio = points/s of the row / points/s of naive at the same D",
        "- peak MB: in a fresh subprocess per row, after the warm-up, the peak RSS is "
        "reset to the current RSS (`echo 5 > /proc/self/clear_refs`); peak MB = `VmHWM` "
        "(/proc/self/status) after the timed calls minus `VmRSS` before them, i.e. the "
        "extra resident memory of a call, model, data and libraries excluded (the small "
        "warm-up keeps the allocator from holding pages a full-size call would reuse). "
        "(`ru_maxrss` is the same high-water mark but never drops below the parent's RSS "
        "at the fork/exec, so its delta is meaningless here; it is the fallback, a lower "
        "bound, where /proc is missing; CSV column `memory` says which.)",
        f"- check: max | |out| - |full| | / max |full| on the first {N_CHECK} points, "
        "against svd_solver='full' (naive: against transform)",
        "",
    ]
    return "\n".join(lines) + "\n"  # a blank line before the table


def fit_model(p, seed):
    """The fitted estimator for one D (see the module docstring)."""
    n_init = max(p["n_train"], N_INIT)
    X_init = make_data(n_init, p["D"], p["k"], seed)
    X_train = X_init[:p["n_train"]]
    # The initial flow is whitened on N_INIT rows (cheap), so that its covariance is full
    # rank even where fit itself only sees a few rows (D = 784).
    init = MLPFlow.from_data(torch.as_tensor(X_init - X_train.mean(axis=0)), ALPHA,
                             n_layers=N_LAYERS, generator=torch.Generator().manual_seed(seed))
    model = NormalizingFlowPCA(n_components=p["k"], flow=init, alpha=ALPHA,
                               n_layers=N_LAYERS, max_iter=1,
                               learning_rate_init=LEARNING_RATE, random_state=seed,
                               svd_solver="full")
    with warnings.catch_warnings():  # one epoch does not converge, by design
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X_train)


def timed_rows(p, seed):
    # Same mixing map as the training data (same seed); the rows after the initial ones.
    n_init = max(p["n_train"], N_INIT)
    return make_data(n_init + p["n"], p["D"], p["k"], seed)[n_init:]


def main(argv=None):
    """Run the benchmark and write the table, the CSV and (with matplotlib) the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller n, fewer repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", type=int, nargs="*", default=None,
                        help="only these D (among 3, 64, 784)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for this run (default: torch's)")
    parser.add_argument("--name", default="transform_speed",
                        help="base name of the output files in benchmarks/results")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sizes = [p for p in plan(args.quick) if not args.dims or p["D"] in args.dims]
    print(header(args, sizes), flush=True)

    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in sizes:
            start = time.perf_counter()
            model = fit_model(p, args.seed)
            X = timed_rows(p, args.seed)
            print(f"D={p['D']}: fitted on {p['n_train']} rows in "
                  f"{time.perf_counter() - start:.1f} s (not part of the table)", flush=True)
            model_path = os.path.join(tmp, f"model_{p['D']}.pkl")
            data_path = os.path.join(tmp, f"X_{p['D']}.npy")
            with open(model_path, "wb") as f:
                pickle.dump(model, f)
            np.save(data_path, X)
            jobs = [("naive", "transform")] + [("full", op) for op in OPS]
            if p["randomized"]:
                jobs += [("randomized", "transform"), ("randomized", "local_directions")]
            naive_rate = float("nan")
            for method, op in jobs:
                config = {"model": model_path, "data": data_path, "method": method,
                          "op": op, "threads": threads, "seed": args.seed,
                          "repeats": p["repeats"], "min_repeats": min(MIN_REPEATS,
                                                                      p["repeats"]),
                          "budget_s": BUDGET_S,
                          "warmup_rows": max(1, min(p["n"], p["n"] // 50))}
                result = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--worker",
                     json.dumps(config)], capture_output=True, text=True, check=True)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                rate = p["n"] / r["median_s"]
                if method == "naive":
                    naive_rate = rate
                row = {"D": p["D"], "n": p["n"], "k": p["k"], "method": method, "op": op,
                       "points_per_s": rate, "median_s": r["median_s"],
                       "repeats": len(r["times"]), "ratio_vs_naive": rate / naive_rate,
                       "peak_mb": r["peak_mb"], "memory": r["memory"], "check": r["check"]}
                rows.append(row)
                print(f"D={p['D']:4d} n={p['n']:5d} k={p['k']} {method:10s} {op:17s} "
                      f"{rate:11.1f} pts/s  x{row['ratio_vs_naive']:7.2f} vs naive  "
                      f"peak {r['peak_mb']:8.1f} MB  check {r['check']:.1e}  "
                      f"(runs: {', '.join(f'{t:.3g}' for t in r['times'])} s)", flush=True)
    total = time.perf_counter() - t_start

    table = ["| D | n | k | method | op | points/s | ratio vs naive | peak MB | check |",
             "|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        check = "-" if math.isnan(r["check"]) else f"{r['check']:.1e}"
        table.append(f"| {r['D']} | {r['n']} | {r['k']} | {r['method']} | {r['op']} | "
                     f"{r['points_per_s']:.4g} | {r['ratio_vs_naive']:.3g} | "
                     f"{r['peak_mb']:.1f} | {check} |")
    footer = f"\nWhole run (fits, subprocesses and timing): {total:.0f} s.\n"
    text = header(args, sizes) + "\n".join(table) + "\n" + footer
    print()
    print("\n".join(table))
    print(footer)

    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{args.name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS_DIR, f"{args.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure.")
        return
    fig, axes = plt.subplots(1, len(OPS), figsize=(4 * len(OPS), 4), sharey=True)
    for ax, op in zip(axes, OPS):
        for method, color in (("naive", "C3"), ("full", "C0"), ("randomized", "C2")):
            sel = [r for r in rows if r["method"] == method
                   and (r["op"] == op or method == "naive")]
            if sel:
                ax.plot([r["D"] for r in sel], [r["points_per_s"] for r in sel],
                        marker="o", color=color,
                        label="naive transform" if method == "naive" else method)
        ax.set(xscale="log", yscale="log", xlabel="D", title=op)
    axes[0].set_ylabel("points / s")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, f"{args.name}.png"), dpi=120)


if __name__ == "__main__":
    main()
