"""Do injective flows' samples land on the manifold? Curves and surfaces nobody tuned for.

``NormalizingFlowPCA(flow='injective', n_components=d, random_state=seed)`` on the
measurable curves and surfaces of :data:`manifolds.SUITE` (11: circle, helix, trefoil, a
curve in 10-D, sphere, torus, swiss roll, S-curve, Mobius strip, saddle, a surface in
10-D; noise-free, 1 000 points, seeds 0, 1, 2). Per fit: 2 000 samples
(``sample(random_state=seed + 1)``), their distance to the true manifold
(:meth:`manifolds.Manifold.distance`, a dense grid) divided by the manifold's diameter:
mean, median, 90th percentile and the fraction within 0.02; the reconstruction error of
1 000 fresh points of the manifold (``inverse_transform(transform(x))``), same units;
CPU seconds of the fit (one thread).

Settings (``--settings``, default ``defaults``): ``defaults`` (the package's, whatever
they are at run time: for ``'injective'`` the paper's training settings, 8 body layers,
2 base layers, Adam from 3e-2 with the plateau rule, batches of 200, up to 2 000 epochs)
and ``test`` (the settings of ``tests/test_injective.py``'s circle: 4 body layers, 3 base
layers, 1e-2, batches of 100, 1 000 epochs). The report gives
:data:`manifolds.TRAINING_HALF` and :data:`manifolds.TEST_HALF` separately, so that a
setting chosen on the first is judged on the second.

Writes ``injective.md`` and ``injective.csv`` under ``--out`` (``benchmarks/results``);
``--quick`` (circle and sphere, 300 points, seed 0, 5 epochs) writes ``injective_quick.*``.
Asserts nothing.

Usage: ``python benchmarks/injective.py [--quick] [--settings defaults,test]
[--manifolds circle,sphere] [--seeds 0,1,2] [--jobs 2] [--out DIR]``.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]

import manifolds  # noqa: E402
from _report import (environment, header_lines, limited_threads,  # noqa: E402
                     markdown_table, write_csv)

from flowpca import NormalizingFlowPCA  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "defaults": {},
    "test": dict(n_layers=4, learning_rate_init=1e-2, batch_size=100, max_iter=1000,
                 flow_params={"latent_layers": 3}),
}
N_SAMPLES = 2000
WITHIN = 0.02


def run_case(manifold, setting, n, seed, extra):
    X = manifold.sample(n, 0.0, seed)
    row = dict(manifold=manifold.name, d=manifold.dimension, D=manifold.n_features,
               setting=setting, n=n, seed=seed,
               half="training" if manifold.name in manifolds.TRAINING_HALF else "test")
    params = {**SETTINGS[setting], **extra}
    with limited_threads(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.process_time()
        try:
            model = NormalizingFlowPCA(flow="injective", n_components=manifold.dimension,
                                       random_state=seed, **params).fit(X)
        except Exception as error:  # noqa: BLE001 - the row keeps the failure
            row.update(status=f"error: {error!r}"[:200])
            return row
        row["fit_cpu_s"] = time.process_time() - start
        samples = model.sample(N_SAMPLES, random_state=seed + 1)
        fresh = manifold.clean(1000, seed + 500)
        back = model.inverse_transform(model.transform(fresh))
    distance = manifold.distance(samples) / manifold.diameter
    error = np.linalg.norm(back - fresh, axis=1) / manifold.diameter
    row.update(status="ok", n_iter=model.n_iter_, mean=float(distance.mean()),
               median=float(np.median(distance)), p90=float(np.quantile(distance, 0.9)),
               within=float(np.mean(distance <= WITHIN)),
               recon_median=float(np.median(error)), recon_within=float(np.mean(error <= WITHIN)),
               warnings=len({str(w.message)[:60] for w in caught}),
               resolution=manifold.resolution / manifold.diameter)
    return row


def _mean(rows, key):
    values = [r[key] for r in rows if r.get("status") == "ok"]
    return float(np.mean(values)) if values else float("nan")


def report(rows, args, env, wall, names):
    lines = ["# Injective flows: do their samples lie on the manifold?", ""]
    lines += header_lines(env)
    lines += [f"- manifolds: {', '.join(names)} (benchmarks/manifolds.py), noise-free",
              f"- points: {args.n}; seeds: {', '.join(map(str, args.seeds))}; samples per "
              f"fit: {N_SAMPLES}",
              f"- training half: {', '.join(n for n in names if n in manifolds.TRAINING_HALF)}",
              f"- test half: {', '.join(n for n in names if n in manifolds.TEST_HALF)}",
              "- settings: " + "; ".join(f"`{k}` {SETTINGS[k] or 'the package defaults'}"
                                          for k in args.settings),
              f"- total wall time: {wall:.0f} s", "",
              "Distances are divided by the manifold's diameter. mean / median / p90: of the "
              "samples' distance to the true manifold; within: the fraction of samples within "
              f"{WITHIN}; round trip: median relative error of inverse_transform(transform(x)) "
              "on 1 000 fresh points of the manifold and the fraction within "
              f"{WITHIN}. The grid's resolution bounds the distance's error by half its value.",
              ""]
    summary = []
    for setting in args.settings:
        for half in ("training", "test", "all"):
            part = [r for r in rows if r["setting"] == setting
                    and (half == "all" or r["half"] == half)]
            summary.append({"setting": setting, "half": half, "fits": len(part),
                            **{k: _mean(part, k) for k in ("mean", "median", "p90", "within",
                                                           "recon_median", "fit_cpu_s")},
                            "met": sum(r.get("mean", np.inf) <= WITHIN for r in part)})
    lines += ["## Summary (means over manifolds and seeds)", "",
              markdown_table([("setting", "setting"), ("half", "half"), ("fits", "fits"),
                              ("mean", "mean distance"), ("median", "median"),
                              ("p90", "p90"), ("within", "within"),
                              ("met", f"fits with mean <= {WITHIN}"),
                              ("recon_median", "round-trip median"),
                              ("fit_cpu_s", "fit CPU s")], summary, digits=4), ""]
    per = []
    for name in names:
        for setting in args.settings:
            part = [r for r in rows if r["manifold"] == name and r["setting"] == setting]
            if not part:
                continue
            first = part[0]
            per.append({"manifold": name, "d": first["d"], "D": first["D"],
                        "half": first["half"], "setting": setting,
                        **{k: _mean(part, k) for k in ("mean", "median", "p90", "within",
                                                       "recon_median", "recon_within",
                                                       "fit_cpu_s", "resolution")},
                        "per_seed": ", ".join(f"{r['mean']:.4f}" if r.get("status") == "ok"
                                              else r.get("status", "") for r in part)})
    lines += ["## Per manifold (mean over the seeds)", "",
              markdown_table([("manifold", "manifold"), ("d", "d"), ("D", "D"),
                              ("half", "half"), ("setting", "setting"),
                              ("mean", "mean distance"), ("per_seed", "per seed"),
                              ("median", "median"), ("p90", "p90"), ("within", "within"),
                              ("recon_median", "round-trip median"),
                              ("recon_within", "round trip within"),
                              ("fit_cpu_s", "fit CPU s"), ("resolution", "grid resolution")],
                             per, digits=4), ""]
    suffix = "_quick" if args.quick else ""
    (args.out / f"injective{suffix}.md").write_text("\n".join(lines) + "\n")
    write_csv(args.out / f"injective{suffix}.csv", rows,
              ["manifold", "d", "D", "half", "setting", "n", "seed", "status", "n_iter",
               "mean", "median", "p90", "within", "recon_median", "recon_within",
               "fit_cpu_s", "warnings", "resolution"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--settings", default="defaults")
    parser.add_argument("--manifolds", default="")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.settings = args.settings.split(",")
    names = [m.name for m in manifolds.SUITE if m.measurable]
    args.n, args.seeds, extra = 1000, tuple(int(s) for s in args.seeds.split(",")), {}
    if args.quick:
        names, args.n, args.seeds, extra = ["circle", "sphere"], 300, (0,), {"max_iter": 5}
    if args.manifolds:
        names = args.manifolds.split(",")
    env = environment(threads=1)
    start = time.time()
    rows = Parallel(n_jobs=args.jobs, verbose=5)(
        delayed(run_case)(manifolds.BY_NAME[name], setting, args.n, seed, extra)
        for name in names for setting in args.settings for seed in args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    report(rows, args, env, time.time() - start, names)


if __name__ == "__main__":
    main()
