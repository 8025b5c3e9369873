"""Time one training step of the MLP flow: structured Jacobian algebra vs the naive path.

One step is the forward pass of the penalized objective and its backward pass (no
optimizer update). Three implementations of the same flow are timed in the same run:

- ours: :func:`flowpca.density.penalized_nll` on :class:`flowpca.flows.MLPFlow`, i.e.
  one ``slogdet`` per layer and the Frobenius penalty pushed alongside the forward pass
  (exact: the identity; Hutchinson: one probe);
- naive: per-sample Jacobians from ``torch.func.vmap(torch.func.jacrev(f))``, their
  ``log|det|`` from ``flowpca._linalg.slogdet`` (torch's batched LU is broken on a
  multi-threaded CPU at large D, see docs/contributing.rst, "Known hazards") and the
  penalty from the same
  Jacobians;
- floor: a plain forward and backward of the same MLP, with no log-determinant and no
  penalty (what any network of this size costs).

Usage::

    python benchmarks/train_speed.py            # D = 3, 64, 784 (a few minutes)
    python benchmarks/train_speed.py --quick    # fewer repeats, no naive path at D = 784

Writes ``benchmarks/results/train_speed.md`` and ``train_speed.csv`` (and
``train_speed.png`` when matplotlib is installed). Asserts nothing.
"""

import argparse
import csv
import ctypes
import datetime
import gc
import math
import os
import platform
import statistics
import time

import numpy as np
import torch

from flowpca import _linalg
from flowpca.density import penalized_nll
from flowpca.flows import MLPFlow

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

ALPHA = 5e-5
N_LAYERS = 8


def make_data(n_samples, n_features, dtype, seed):
    """A centered, mildly non-Gaussian cloud (a random linear map of a cubic warp)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, n_features, generator=generator, dtype=torch.float64)
    z = z + 0.3 * z.pow(3) / 3
    mixing = torch.randn(n_features, n_features, generator=generator, dtype=torch.float64)
    X = z @ (mixing / math.sqrt(n_features)).T
    return (X - X.mean(dim=0)).to(dtype)


def naive_loss(flow, x, penalty, generator):
    def single(row):
        return flow._map(row.unsqueeze(0)).squeeze(0)
    jacobian = torch.func.vmap(torch.func.jacrev(single))(x)
    y = flow._map(x)
    log_abs_det = _linalg.slogdet(jacobian)[1]
    if penalty == "exact":
        frobenius_sq = jacobian.pow(2).sum(dim=(1, 2))
    else:
        probe = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        frobenius_sq = (jacobian @ probe.unsqueeze(-1)).pow(2).sum(dim=(1, 2))
    per_row = 0.5 * y.pow(2).sum(dim=1) - log_abs_det + ALPHA * frobenius_sq
    return per_row.mean()


def ours_loss(flow, x, penalty, generator):
    return penalized_nll(flow, x, ALPHA, penalty=penalty, n_probes=1, generator=generator)


def floor_loss(flow, x, penalty, generator):
    return 0.5 * flow._map(x).pow(2).sum(dim=1).mean()


def release_memory():
    """Give freed memory back to the OS between the multi-GB steps at D = 784."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def time_step(loss_fn, flow, x, penalty, seed, repeats, warmup):
    """Median wall time (ms) of forward + backward over ``repeats`` runs."""
    generator = torch.Generator().manual_seed(seed)
    times = []
    for i in range(warmup + repeats):
        flow.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss_fn(flow, x, penalty, generator).backward()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    flow.zero_grad(set_to_none=True)
    release_memory()
    return 1e3 * statistics.median(times)


def plan(quick):
    """Per D: batch, then (repeats, warm-ups) for ours and the floor, for ours with the
    exact penalty, and for the naive path ((0, 0) skips it). At D = 784 the exact penalty
    and the naive path cost tens of seconds per step (both push D columns through the
    network), so they get a single timed step."""
    if quick:
        return [
            dict(D=3, batch=200, ours=(20, 3), ours_exact=(20, 3), naive=(5, 1)),
            dict(D=64, batch=200, ours=(10, 3), ours_exact=(3, 1), naive=(3, 1)),
            dict(D=784, batch=64, ours=(3, 1), ours_exact=(0, 0), naive=(0, 0)),
        ]
    return [
        dict(D=3, batch=200, ours=(50, 5), ours_exact=(50, 5), naive=(20, 2)),
        dict(D=64, batch=200, ours=(30, 3), ours_exact=(10, 2), naive=(10, 2)),
        dict(D=784, batch=64, ours=(5, 2), ours_exact=(1, 0), naive=(1, 0)),
    ]


def header(seed):
    lines = [
        "# MLP flow: time per training step (forward + backward of the penalized NLL)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, numpy {np.__version__}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}",
        f"- platform: {platform.platform()}, processor: {platform.processor() or 'n/a'}, "
        f"cpu count: {os.cpu_count()}, load average at start: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (other processes skew timings)",
        f"- seed: {seed}; n_layers = {N_LAYERS} (9 affine maps), alpha = {ALPHA}, "
        "Hutchinson with 1 probe; batch 200 (64 at D = 784); median over repeats after "
        "warm-up",
        "- naive: per-sample `vmap(jacrev(f))` Jacobian + `_linalg.slogdet` + penalty "
        "from that Jacobian; floor: plain forward + backward, no log-det, no penalty",
        "",
    ]
    return "\n".join(lines)


def write_results(rows, seed):
    """Write the Markdown table and the CSV; return the table's lines."""
    table = ["| D | dtype | penalty | naive ms | ours ms | floor ms | naive/ours | ours/floor |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]

    def fmt(value, spec):
        return "skipped" if math.isnan(value) else format(value, spec)

    for r in rows:
        table.append(f"| {r['D']} | {r['dtype']} | {r['penalty']} | "
                     f"{fmt(r['naive_ms'], '.2f')} | {fmt(r['ours_ms'], '.2f')} | "
                     f"{r['floor_ms']:.2f} | {fmt(r['naive_over_ours'], '.1f')} | "
                     f"{fmt(r['ours_over_floor'], '.2f')} |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "train_speed.md"), "w") as f:
        f.write(header(seed) + "\n" + "\n".join(table) + "\n")
    with open(os.path.join(RESULTS_DIR, "train_speed.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def main(argv=None):
    """Run the benchmark and write the table, the CSV and (with matplotlib) the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats; skip the naive path at D = 784")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", type=int, nargs="*", default=None,
                        help="only these D (among 3, 64, 784)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for this run (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    print(header(args.seed))
    for setting in plan(args.quick):
        n_features, batch = setting["D"], setting["batch"]
        if args.dims and n_features not in args.dims:
            continue
        for dtype in (torch.float32, torch.float64):
            X = make_data(max(batch, 1000), n_features, torch.float64, args.seed)
            flow = MLPFlow.from_data(X, ALPHA, n_layers=N_LAYERS,
                                     generator=torch.Generator().manual_seed(args.seed))
            flow = flow.to(dtype)
            x = X[:batch].to(dtype)
            floor_ms = time_step(floor_loss, flow, x, None, args.seed, *setting["ours"])
            for penalty in ("exact", "hutchinson"):
                measured = {}
                for name, loss_fn, key in (
                        ("ours", ours_loss, "ours_exact" if penalty == "exact" else "ours"),
                        ("naive", naive_loss, "naive")):
                    repeats, warmup = setting[key]
                    measured[name] = (time_step(loss_fn, flow, x, penalty, args.seed,
                                                repeats, warmup)
                                      if repeats else float("nan"))
                naive_ms, ours_ms = measured["naive"], measured["ours"]
                row = {"D": n_features, "batch": batch, "dtype": str(dtype).split(".")[1],
                       "penalty": penalty, "naive_ms": naive_ms, "ours_ms": ours_ms,
                       "floor_ms": floor_ms, "naive_over_ours": naive_ms / ours_ms,
                       "ours_over_floor": ours_ms / floor_ms,
                       "repeats_ours": setting["ours_exact" if penalty == "exact"
                                               else "ours"][0],
                       "repeats_naive": setting["naive"][0]}
                rows.append(row)
                write_results(rows, args.seed)  # a killed run keeps what it measured
                print(f"D={n_features:4d} {row['dtype']} {penalty:10s} naive {naive_ms:9.2f} ms"
                      f"  ours {ours_ms:8.2f} ms  floor {floor_ms:7.2f} ms", flush=True)

    table = write_results(rows, args.seed)
    print()
    print("\n".join(table))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure.")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, penalty in zip(axes, ("exact", "hutchinson")):
        for dtype, marker in (("float32", "o"), ("float64", "s")):
            sel = [r for r in rows if r["penalty"] == penalty and r["dtype"] == dtype]
            dims = [r["D"] for r in sel]
            for key, color in (("naive_ms", "C3"), ("ours_ms", "C0"), ("floor_ms", "C7")):
                ax.plot(dims, [r[key] for r in sel], marker=marker, color=color,
                        label=f"{key[:-3]} {dtype}")
        ax.set(xscale="log", yscale="log", xlabel="D", title=f"penalty: {penalty}")
    axes[0].set_ylabel("ms per step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, "train_speed.png"), dpi=120)


if __name__ == "__main__":
    main()
