"""Compare NormalizingFlowPCA with PCA, KernelPCA, Isomap, LLE, GaussianMixture and
KernelDensity on the benchmark data sets.

For each data set and method: held-out log-likelihood (nats/sample, density models
only: PCA's is probabilistic PCA's), latent-factor recovery (for each true factor, the
largest |Spearman rho| over the first k components), trustworthiness of the k-component
embedding (10 neighbours), relative reconstruction error with k components (methods with
an inverse), the mean distance of draws from the fitted density to the true manifold
(density models on the noise-free manifolds), and fit / tuning / transform / scoring
seconds. Every registered flow family runs with alpha = 0 and with alpha tuned on a
validation split (see
``_methods.py`` for every tuning protocol); a family that does not import is listed as
not available. A method that raises, times out or warns keeps its row, with the error.

Writes ``compare.md`` and ``compare.csv`` (``compare_quick.*`` with ``--quick``) under
``--out``. Asserts nothing. ``--merge A.csv B.csv ...`` writes one report from earlier
runs' rows instead (a later file's row replaces an earlier one of the same data set and
method key), e.g. to rerun a few rows without rerunning the rest.

Every flow fit trains for at most ``flow_cpu_seconds`` of CPU time (each alpha-tuning
fit ``tune_cpu_seconds``; see ``Budget``), so that families of very different cost per
step get the same compute; the "chosen" column says where that budget stopped training.
Rows run in ``--jobs`` worker processes (default: one per core), each with ``--threads``
torch/BLAS threads.

Usage: ``python benchmarks/compare.py [--quick] [--datasets a,b] [--methods pca,nfpca-*]
[--jobs 2] [--threads 1] [--out DIR] [--stem NAME] [--flow-steps N] [--tune-steps N]``.
"""

import argparse
import csv
import fnmatch
import functools
import json
import multiprocessing
import os
import signal
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

# The working tree's flowpca (not an installed copy) and the sibling modules.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]

import datasets  # noqa: E402
from _methods import Budget, all_methods, cpu_timer  # noqa: E402
from _metrics import (factor_recovery, mean_log_likelihood,  # noqa: E402
                      off_manifold_distances, relative_reconstruction_error, trust)
from _report import (environment, header_lines, limited_threads,  # noqa: E402
                     markdown_table, write_csv)

RESULTS = Path(__file__).parent / "results"
REFERENCE = "nfpca-mlp-tuned"

COLUMNS = [("dataset", "data"), ("method", "method"), ("status", "status"),
           ("test_ll", "test LL"), ("recovery", "recovery abs(rho)"), ("trust", "trust."),
           ("recon_error", "recon. err"), ("recon_n", "recon. n"),
           ("off_manifold", "off-manifold dist."),
           ("off_manifold_median", "off-manifold median"), ("fit_s", "fit s"),
           ("tune_s", "tune s"),
           ("transform_s", "transform s"), ("score_s", "score s"),
           ("reconstruct_s", "recon. s"), ("params", "chosen"),
           ("notes", "notes")]
CSV_KEYS = ["dataset", "n", "method", "key", "family", "status", "test_ll", "factors",
            "recovery_1", "recovery_2", "trust", "recon_error", "recon_n", "off_manifold",
            "off_manifold_median", "sample_n", "fit_s", "tune_s", "transform_s", "score_s",
            "reconstruct_s", "sample_s", "params", "notes"]


NUMERIC = {"test_ll", "recovery_1", "recovery_2", "trust", "recon_error", "recon_n",
           "off_manifold", "off_manifold_median", "sample_n", "fit_s", "tune_s",
           "transform_s", "score_s", "reconstruct_s", "sample_s"}


class MethodTimeout(Exception):
    """A method ran past its time budget."""


@contextmanager
def time_limit(seconds):
    """Raise :class:`MethodTimeout` in the main thread after ``seconds`` of this
    process's CPU time (not wall time, so that the budget does not depend on the load
    of a shared machine)."""
    def expire(signum, frame):
        raise MethodTimeout(f"stopped after {seconds} CPU s")
    with cpu_timer(signal.ITIMER_PROF, signal.SIGPROF, seconds, expire):
        yield


def _summarize_warnings(caught):
    counts = {}
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
        counts[text] = counts.get(text, 0) + 1
    return "; ".join(f"{t} (x{c})" if c > 1 else t for t, c in counts.items())


def _status(caught):
    names = {w.category.__name__ for w in caught}
    if "TrainingDivergedWarning" in names:
        return "diverged"
    return "warning" if names else "ok"


def _timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def _sample_distance(fitted, data, budget, row):
    """Fill ``row`` with the mean distance of the fitted density's draws to the true
    manifold, where both exist; a draw that fails is noted in the row, not fatal."""
    if fitted.sample is None or data.manifold_distance is None:
        return
    row["stage"] = "sample"
    n = budget.sample_points
    try:
        samples, row["sample_s"] = _timed(fitted.sample, n, data.seed)
        mean, row["off_manifold_median"] = off_manifold_distances(
            samples, data.manifold_distance)
    except MethodTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 -- noted in the row; the other scores stand
        message = str(exc).splitlines()[0][:160] if str(exc) else ""
        row["sample_note"] = ("off-manifold distance not computed: "
                              f"{type(exc).__name__}: {message}")
        return
    row["sample_n"] = n
    if np.isfinite(mean):
        row["off_manifold"] = mean
    else:
        row["sample_note"] = (f"off-manifold mean distance overflows (largest |sample| "
                              f"{np.abs(samples).max():.3g}): median only")


def _scores(fitted, data, budget, row):
    """Fill ``row`` with the test-set metrics the fitted method supports."""
    X = data.X_test
    if fitted.score_samples is not None:
        row["stage"] = "score"
        log_density, row["score_s"] = _timed(fitted.score_samples, X)
        row["test_ll"] = mean_log_likelihood(log_density)
    _sample_distance(fitted, data, budget, row)
    if fitted.transform is None:
        return
    row["stage"] = "transform"
    Z, row["transform_s"] = _timed(fitted.transform, X)
    if data.latent_test is not None:
        recovery = factor_recovery(Z, data.latent_test)
        row["factors"] = "/".join(data.factor_names)
        row["recovery"] = " / ".join(f"{r:.3f}" for r in recovery)
        for i, r in enumerate(recovery[:2], start=1):
            row[f"recovery_{i}"] = float(r)
    m = budget.trust_points
    row["trust"] = trust(X[:m], Z[:m])
    if fitted.reconstruct is not None:
        row["stage"] = "reconstruct"
        m = budget.reconstruction_points
        if fitted.slow_inverse and data.n_features > budget.slow_inverse_max_features:
            m = budget.slow_inverse_points
        row["recon_n"] = m
        if m == 0:
            return
        X_hat, row["reconstruct_s"] = _timed(fitted.reconstruct, X[:m])
        row["recon_error"] = relative_reconstruction_error(X[:m], X_hat)


def run_method(method, data, budget):
    """One row: fit, score, and record whatever went wrong."""
    row = {"dataset": data.name, "method": method.label, "key": method.key,
           "family": method.family}
    if method.unavailable:
        row["status"] = method.unavailable
        return row
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with time_limit(budget.timeout):
                row["stage"] = "fit"
                fitted = method.fit(data, budget)
                row.update(fit_s=fitted.fit_seconds, tune_s=fitted.tune_seconds,
                           params=json.dumps(fitted.params, default=float))
                _scores(fitted, data, budget, row)
        except MethodTimeout as exc:
            row["status"] = f"timeout in {row['stage']} ({exc})"
        except Exception as exc:  # noqa: BLE001 -- reported in the row, not hidden
            message = str(exc).splitlines()[0][:200] if str(exc) else ""
            row["status"] = f"error in {row['stage']}: {type(exc).__name__}: {message}"
        else:
            row["stage"] = "done"
    row.setdefault("status", _status(caught))
    row["notes"] = "; ".join(filter(None, [row.pop("sample_note", ""),
                                           _summarize_warnings(caught)]))
    return row


# ---------------------------------------------------------------- head to head
_DIRECTIONS = [("test_ll", "test LL", +1), ("recovery_mean", "mean recovery", +1),
               ("trust", "trust.", +1), ("recon_error", "recon. err", -1),
               ("off_manifold_median", "off-manifold median", -1), ("fit_s", "fit s", -1)]


def _comparable(row):
    return row.get("status", "").split(" ")[0] in {"ok", "warning", "diverged"}


def head_to_head(rows, reference=REFERENCE):
    """Per data set, the reference method against every other one, metric by metric."""
    out = []
    for row in rows:
        values = [row.get(f"recovery_{i}") for i in (1, 2)]
        values = [v for v in values if v is not None]
        row["recovery_mean"] = float(np.mean(values)) if values else None
    for name in dict.fromkeys(r["dataset"] for r in rows):
        block = [r for r in rows if r["dataset"] == name and _comparable(r)]
        ours = next((r for r in block if r["key"] == reference), None)
        if ours is None:
            continue
        for other in block:
            if other is ours:
                continue
            line = {"dataset": name, "method": other["method"]}
            for key, _, sign in _DIRECTIONS:
                a, b = ours.get(key), other.get(key)
                if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
                    continue
                verdict = "tie" if np.isclose(a, b, rtol=1e-3, atol=1e-3) else (
                    "win" if sign * (a - b) > 0 else "loss")
                line[key] = f"{verdict} {_short(a)} vs {_short(b)}"
            out.append(line)
    return out


def _short(x):
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


# ---------------------------------------------------------------- driver
def select(items, patterns, name=lambda x: x, default=lambda x: True):
    """Items whose name matches one of the comma-separated glob ``patterns`` (without
    patterns: the items ``default`` accepts)."""
    if not patterns:
        return [x for x in items if default(x)]
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [x for x in items if any(fnmatch.fnmatch(name(x), p) for p in wanted)]
    if not chosen:
        raise SystemExit(f"nothing matches {patterns!r}")
    return chosen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, few epochs, two tuning points (smoke test)")
    parser.add_argument("--datasets", default="", help=f"comma-separated, from "
                        f"{','.join(datasets.NAMES)} (globs allowed; default all)")
    parser.add_argument("--methods", default="", help="comma-separated method keys, globs "
                        "allowed, e.g. 'pca,isomap,nfpca-mlp-*' (default: all but the alpha=0 rows "
                        "of the families other than linear, mlp and realnvp; see --list)")
    parser.add_argument("--list", action="store_true", help="list method keys and exit")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads per job (default 1); restored "
                        "afterwards")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="rows run at once, in worker processes (default: one per "
                        "core; 1 runs in this process)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--merge", nargs="+", type=Path, default=[], metavar="CSV",
                        help="write one report from the rows of earlier runs' CSV files "
                        "(e.g. runs split by method) instead of running anything")
    parser.add_argument("--note", default="", help="a line added to the report's header")
    parser.add_argument("--flow-steps", type=int, default=None, metavar="N",
                        help="override the budget's gradient steps of each final flow fit "
                        "(default 4000, 60 with --quick); data sizes are unchanged")
    parser.add_argument("--tune-steps", type=int, default=None, metavar="N",
                        help="override the budget's gradient steps of each alpha-tuning "
                        "fit (default 600, 20 with --quick)")
    parser.add_argument("--stem", default="compare",
                        help="output file name stem: writes STEM.md/.csv (STEM_quick.* with "
                        "--quick) under --out (default compare)")
    return parser.parse_args(argv)


def write_report(rows, args, env, budget, seconds):
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{args.stem}{suffix}.csv", rows, CSV_KEYS)
    sizes = sorted({(r["dataset"], r.get("n")) for r in rows if r.get("n")})
    text = [
        "# NormalizingFlowPCA vs PCA, KernelPCA, Isomap, LLE, GaussianMixture, "
        "KernelDensity" + (" (quick)" if args.quick else ""), "",
        *header_lines(env),
        f"- seeds: data and split seed {datasets.SEED}; every method's random_state = "
        "the data seed",
        f"- sizes (train/test): {', '.join(f'{d} {n}' for d, n in sizes)}",
        f"- budget: {budget}",
        f"- total wall time: {seconds:.0f} s" if np.isfinite(seconds) else
        "- total wall time: see the merged runs",
        "",
        "Columns: test LL = mean held-out log-likelihood, nats/sample, full-dimensional "
        "density (PCA: probabilistic PCA with k components); recovery = for each true "
        "factor, max |Spearman rho| over the first k components of the test points; "
        "trust. = sklearn.manifold.trustworthiness (10 neighbours) of the k-component "
        "embedding of the first test points; recon. err = mean ||x - x_hat||^2 / total "
        "variance, reconstructing the first recon. n test points from k components (methods "
        "with an inverse; few points where the flow's iterative inverse_transform is slow, "
        f"see budget); off-manifold dist. = mean Euclidean distance (data units) of "
        f"{budget.sample_points} draws from the fitted density model "
        "(NormalizingFlowPCA.sample, every family, injective included; "
        "GaussianMixture.sample; KernelDensity.sample; seed = the data seed) to the true "
        "noise-free manifold, on s_curve, sine, swiss_roll and embedded_plane only (scale: "
        "the S-curve's height spans 2, the swiss roll's 21); off-manifold median = their "
        "median (the mean is dominated by a flow's far tails where they are heavy); "
        "times in "
        "seconds (tune = hyperparameter search on the training set; transform and score: "
        "the whole test set; recon.: the recon. n points). Tuning protocols: see "
        "benchmarks/_methods.py. On noise-free "
        "manifolds (s_curve, sine, swiss_roll, embedded_plane) the density is singular: "
        "held-out LL there mostly measures the variance floor (alpha, reg_covar, "
        "bandwidth).",
        "",
        *_manifold_lines(rows),
        markdown_table(COLUMNS, rows),
        "",
        f"## Head to head: {REFERENCE} against each method",
        "",
        "win/loss/tie for the reference (first number) against the method (second): "
        "higher is better for test LL, mean recovery and trust., lower for recon. err, "
        "off-manifold median (the median: heavy-tailed samples make the mean overflow) and "
        "fit s.",
        "",
        markdown_table([("dataset", "data"), ("method", "vs method")]
                       + [(k, t) for k, t, _ in _DIRECTIONS], head_to_head(rows)),
        "",
    ]
    (args.out / f"{args.stem}{suffix}.md").write_text("\n".join(text))


def _manifold_lines(rows):
    """How each data set's distance to the true manifold is computed, and its floor."""
    lines = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        distance = datasets.MANIFOLDS.get(name)
        if distance is not None:
            lines.append(f"- {name}: {distance.describe()}")
    if not lines:
        return []
    return ["Distance to the true manifold (the off-manifold dist. column's resolution: a "
            "curve swept along x1, KD-tree over a grid of the curve, error at most half "
            "the spacing; see benchmarks/datasets.py):", "", *lines, ""]


def merged_rows(paths, names, keys):
    """Rows of earlier runs' CSV files, numbers parsed, in data set and method order; a
    later file's row replaces an earlier one with the same data set and method key."""
    rows = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key in NUMERIC and value != "":
                        row[key] = float(value)
                    elif value == "":
                        row[key] = None
                values = [row.get(f"recovery_{i}") for i in (1, 2)]
                if values[0] is not None:
                    row["recovery"] = " / ".join(f"{v:.3f}" for v in values if v is not None)
                for key in ("recon_n", "sample_n"):
                    if row.get(key) is not None:
                        row[key] = int(row[key])
                rows[(row["dataset"], row["key"])] = row
    rows = [r for r in rows.values() if r["dataset"] in names]
    return sorted(rows, key=lambda r: (names.index(r["dataset"]),
                                       keys.index(r["key"]) if r["key"] in keys else 99))


def _in_order(rows, names, keys):
    """Rows data set by data set, methods in table order."""
    return sorted(rows, key=lambda row: (names.index(row["dataset"]),
                                         keys.index(row["key"])))


@functools.lru_cache(maxsize=None)
def _methods_by_key():
    return {method.key: method for method in all_methods()}


@functools.lru_cache(maxsize=None)
def _dataset(name, quick):
    return datasets.load(name, quick=quick)


def run_row(key, name, quick, budget, threads):
    """One row of the table, by method key and data set name (a worker's task)."""
    data = _dataset(name, quick)
    with limited_threads(threads):
        row = run_method(_methods_by_key()[key], data, budget)
    row["n"] = f"{data.X_train.shape[0]}/{data.X_test.shape[0]}"
    return row


def _cost_order(key, name):
    """Tasks by expected cost, largest first, so that parallel jobs end together."""
    rank = 0 if key.endswith("-tuned") else 1 if key.startswith("nfpca") else 2
    return (rank, name != "digits")


def run_rows(tasks, args, budget, on_row):
    """Run the (method key, data set) ``tasks``, calling ``on_row`` as rows finish."""
    tasks = sorted(tasks, key=lambda task: _cost_order(*task))
    if args.jobs <= 1:
        for key, name in tasks:
            on_row(run_row(key, name, args.quick, budget, args.threads))
        return
    context = multiprocessing.get_context("spawn")  # no forked torch state
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(run_row, key, name, args.quick, budget, args.threads)
                   for key, name in tasks]
        for future in as_completed(futures):
            on_row(future.result())


def main(argv=None):
    args = parse_args(argv)
    methods = select(all_methods(), args.methods, lambda m: m.key, lambda m: m.default)
    if args.list:
        for method in all_methods():
            mark = "" if method.default else " (only with --methods)"
            print(f"{method.key:28s} {method.label}{mark} {method.unavailable}")
        return
    names = select(datasets.NAMES, args.datasets)
    budget = Budget.for_mode(args.quick)
    overrides = {"flow_steps": args.flow_steps, "tune_steps": args.tune_steps}
    budget = replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    env = environment(args.threads)
    env["jobs"] = f"{args.jobs} worker processes" if args.jobs > 1 else "1 (in process)"
    if args.note:
        env["note"] = args.note
    if args.merge:
        rows = merged_rows(args.merge, names, [m.key for m in all_methods()])
        for name in {r["dataset"] for r in rows if not r.get("n")}:
            data = datasets.load(name, quick=args.quick)
            for row in (r for r in rows if r["dataset"] == name):
                row["n"] = f"{data.X_train.shape[0]}/{data.X_test.shape[0]}"
        env["merged from"] = ", ".join(str(p) for p in args.merge)
        env["date (UTC)"] += " (of the merge)"
        env.pop("load average at start")
        env.pop("jobs")  # each merged run's own (see its report)
        write_report(rows, args, env, budget, float("nan"))
        return
    keys = [m.key for m in all_methods()]
    rows, start = [], time.perf_counter()

    def report(row):
        rows.append(row)
        print(f"{row['dataset']:15s} {row['method']:32s} {row['status'][:60]:60s} "
              f"fit {row.get('fit_s') or float('nan'):7.1f} s  "
              f"[{time.perf_counter() - start:6.0f} s]", flush=True)
        write_report(_in_order(rows, names, keys), args, env, budget,
                     time.perf_counter() - start)

    run_rows([(m.key, name) for m in methods for name in names], args, budget, report)
    write_report(_in_order(rows, names, keys), args, env, budget,
                 time.perf_counter() - start)
    print(f"wrote {args.out}/{args.stem}{'_quick' if args.quick else ''}.md/.csv")


if __name__ == "__main__":
    main()
