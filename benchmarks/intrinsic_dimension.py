"""Intrinsic dimension: NormalizingFlowPCA against scikit-dimension on manifolds nobody tuned.

The suite is :data:`manifolds.SUITE` (18 sets of dimension 1 to 5 in 3 to 50
features; see ``benchmarks/manifolds.py``) at noise levels 0, 0.01 and 0.03 (standard
deviation, in units of the manifold's root mean square radius), 500 and 1 000 points,
seeds 0, 1, 2: 324 cases. Per case:

- ``flowpca``: ``NormalizingFlowPCA(random_state=seed).fit(X).intrinsic_dimension_``
  with the package's defaults (the default rule, ``intrinsic_dimension_threshold='gap'``,
  applied at report time to the fitted ``typical_local_variances_``, so that the cache
  follows a change of the rule's constants; the CSV keeps the value at fit,
  ``fitted_dimension``);
- scikit-dimension 0.5.0's ``TwoNN``, ``MLE``, ``lPCA`` and ``DANCo`` with their
  defaults on the same points (``dimension_`` rounded to the nearest integer for the
  exact match; the absolute error uses the unrounded value);
- candidate rules, for choosing the package's rule: the gap rule
  (:func:`flowpca.components._dimension.spectral_gap_dimension`) with gap fractions 1, 0.8, 0.6,
  0.5, 0.4 and smallest gaps (below which the answer is the full dimension) of a factor
  10, 5, 3, 2 in variance on ``typical_local_variances_``, the same fractions as the
  median of the per-point answers on the local variances of (up to) 500 training points,
  and the earlier absolute rule (``threshold=100`` times ``alpha_``).

The rule is chosen on :data:`manifolds.TRAINING_HALF` (the best exact-match rate there)
and reported on :data:`manifolds.TEST_HALF`, manifolds it never saw. Per family: the same
on the 500-point cases of seed 0 for ``flow='maf'`` and ``flow='mlp'`` (the paper's model,
``max_iter=300``: its default of 2 000 epochs takes minutes per fit).

Writes ``intrinsic_dimension.md`` and ``intrinsic_dimension.csv`` under ``--out``
(``benchmarks/results``); every fitted case is cached under ``--cache`` (default
``benchmarks/results/.cache/intrinsic_dimension``, not committed) so that the report can be
rebuilt without refitting; a case's key is its data, flow and parameters only, so delete
the cache after a change to how the package trains. ``--quick``: four manifolds (circle,
helix, sphere, the 3-ball in 10-D), 300 points, seed 0, no noise, 8 epochs, writes
``intrinsic_dimension_quick.*``.
Without scikit-dimension installed (``pip install -c constraints-cpu.txt
scikit-dimension``) its columns stay empty. Asserts nothing.

Usage: ``python benchmarks/intrinsic_dimension.py [--quick] [--jobs 2] [--out DIR]``.
"""

import argparse
import hashlib
import json
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
import flowpca.components._dimension as diagnostics  # noqa: E402
from flowpca.components._dimension import intrinsic_dimension, spectral_gap_dimension  # noqa: E402,E501

RESULTS = Path(__file__).parent / "results"
NOISES = (0.0, 0.01, 0.03)
SIZES = (500, 1000)
SEEDS = (0, 1, 2)
SKDIM = ("TwoNN", "MLE", "lPCA", "DANCo")
GAP_FRACTIONS = (1.0, 0.8, 0.6, 0.5, 0.4)
MIN_GAPS = {"10": np.log(10.0), "5": np.log(5.0), "3": np.log(3.0), "2": np.log(2.0)}
SPECTRUM_POINTS = 500
FAMILIES = {"maf": {}, "mlp": {"max_iter": 300}}


def _key(case):
    return hashlib.sha1(json.dumps(case, sort_keys=True).encode()).hexdigest()[:16]


def _skdim(X):
    try:
        import skdim  # a benchmark dependency only
    except ImportError:
        return {f"{name}_error": "scikit-dimension not installed" for name in SKDIM}
    out = {}
    for name in SKDIM:
        start = time.process_time()
        try:
            out[name] = float(getattr(skdim.id, name)().fit(X).dimension_)
        except Exception as error:  # noqa: BLE001 - the row keeps the failure
            out[name] = float("nan")
            out[f"{name}_error"] = repr(error)[:200]
        out[f"{name}_cpu_s"] = time.process_time() - start
    return out


def run_case(case, cache):
    """Fit one case (or read it from the cache): spectra, dimensions and timings."""
    path = cache / f"{_key(case)}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        return json.loads(str(stored["record"])), stored["log_variances"]
    manifold = manifolds.BY_NAME[case["manifold"]]
    X = manifold.sample(case["n"], case["noise"], case["seed"])
    params = dict(random_state=case["seed"], **case["params"])
    if case["flow"] != "default":
        params["flow"] = case["flow"]
    record = dict(case)
    with limited_threads(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.process_time()
        model = NormalizingFlowPCA(**params).fit(X)
        record["fit_cpu_s"] = time.process_time() - start
        log_variances = np.log(model.local_variances(X[:SPECTRUM_POINTS]))
        record.update(fitted_dimension=int(model.intrinsic_dimension_),
                      typical=model.typical_local_variances_.tolist(),
                      alpha=float(model.alpha_),
                      n_iter=int(model.n_iter_),
                      warnings=len({str(w.message)[:60] for w in caught}))
        if case["flow"] == "default":
            record.update(_skdim(X))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, record=json.dumps(record), log_variances=log_variances)
    return record, log_variances


def candidate_rules(record, log_variances):
    """Dimensions the candidate rules give on one case's local variances."""
    variances = np.exp(log_variances)
    typical = np.asarray(record["typical"])
    # The estimator's own rule, on the spectrum it read its intrinsic_dimension_ from
    # (the package's constants at report time: a cached case follows a change of rule).
    out = {"flowpca": intrinsic_dimension(np.asarray(record["typical"]), record["alpha"]),
           "threshold_100": intrinsic_dimension(typical, record["alpha"], 100.0)}
    for fraction in GAP_FRACTIONS:
        for label, min_gap in MIN_GAPS.items():
            out[f"gap_{fraction}_min{label}"] = int(spectral_gap_dimension(
                typical[None], fraction, min_gap)[0])
        out[f"gap_{fraction}_median"] = int(np.median(spectral_gap_dimension(
            variances, fraction)))
    return out


def _cases(settings):
    cases = []
    for m in settings["manifolds"]:
        for noise in settings["noises"]:
            for n in settings["sizes"]:
                for seed in settings["seeds"]:
                    cases.append(dict(manifold=m.name, noise=noise, n=n, seed=seed,
                                      flow="default", params=settings["params"]))
            for flow, params in FAMILIES.items():
                cases.append(dict(manifold=m.name, noise=noise, n=settings["sizes"][0],
                                  seed=settings["seeds"][0], flow=flow,
                                  params={**params, **settings["params"]}))
    return cases


def _rate(rows, key):
    hits = [round(r[key]) == r["d"] for r in rows if np.isfinite(r.get(key, np.nan))]
    return float(np.mean(hits)) if hits else float("nan")


def _mae(rows, key):
    errors = [abs(r[key] - r["d"]) for r in rows if np.isfinite(r.get(key, np.nan))]
    return float(np.mean(errors)) if errors else float("nan")


def report(rows, settings, env, out, suffix, wall):
    default = [r for r in rows if r["flow"] == "default"]
    halves = {"training": manifolds.TRAINING_HALF, "test": manifolds.TEST_HALF}
    rule_keys = ["threshold_100"] + [f"gap_{f}_{a}" for f in GAP_FRACTIONS
                                     for a in [f"min{g}" for g in MIN_GAPS] + ["median"]]
    training = [r for r in default if r["manifold"] in halves["training"]]
    best_rule = max(rule_keys, key=lambda k: (_rate(training, k), -_mae(training, k)))
    estimators = ["flowpca"] + list(SKDIM)

    lines = ["# Intrinsic dimension: NormalizingFlowPCA against scikit-dimension", ""]
    lines += header_lines(env)
    lines += [f"- suite: {len(settings['manifolds'])} manifolds (benchmarks/manifolds.py); noise "
              f"{', '.join(map(str, settings['noises']))} x RMS radius; sizes "
              f"{', '.join(map(str, settings['sizes']))}; seeds "
              f"{', '.join(map(str, settings['seeds']))}; {len(default)} default cases",
              f"- training half: {', '.join(halves['training'])}",
              f"- test half: {', '.join(halves['test'])}",
              f"- total wall time: {wall:.0f} s", "",
              "Exact match: the rate of cases whose (rounded) estimate equals the true "
              "dimension; MAE: mean absolute error of the unrounded estimate. `flowpca` is "
              "the default estimator's `intrinsic_dimension_`.", ""]

    lines += ["## Choosing the rule (training half)", ""]
    rule_rows = [{"rule": k, **{f"{h}_rate": _rate([r for r in default
                                                    if r["manifold"] in names], k)
                                for h, names in halves.items()},
                  **{f"{h}_mae": _mae([r for r in default if r["manifold"] in names], k)
                     for h, names in halves.items()}} for k in rule_keys]
    lines += [markdown_table([("rule", "rule"), ("training_rate", "training exact"),
                              ("training_mae", "training MAE"), ("test_rate", "test exact"),
                              ("test_mae", "test MAE")], rule_rows), "",
              f"Best on the training half: `{best_rule}`; the package's constants: "
              f"`gap_{diagnostics.GAP_FRACTION}_min{round(np.exp(diagnostics.MIN_GAP))}`. "
              "(`gap_F_minG`: the gap rule on `typical_local_variances_` with gap fraction F, "
              "the full dimension when no gap reaches a factor G in variance; "
              "`gap_F_median`: the median of the per-point answers, G = 10; "
              "`threshold_100`: the earlier absolute rule.)", ""]

    lines += ["## Each half: flowpca against scikit-dimension", ""]
    summary = []
    for half, names in halves.items():
        part = [r for r in default if r["manifold"] in names]
        for noise in settings["noises"] + ("all",):
            sub = part if noise == "all" else [r for r in part if r["noise"] == noise]
            row = {"half": half, "noise": noise, "cases": len(sub)}
            for e in estimators:
                row[f"{e}_rate"], row[f"{e}_mae"] = _rate(sub, e), _mae(sub, e)
            summary.append(row)
    lines += [markdown_table([("half", "half"), ("noise", "noise"), ("cases", "cases")]
                             + [(f"{e}_rate", f"{e} exact") for e in estimators]
                             + [(f"{e}_mae", f"{e} MAE") for e in estimators], summary), ""]

    lines += ["## Per manifold (all noise levels, sizes and seeds)", ""]
    per = []
    for m in settings["manifolds"]:
        sub = [r for r in default if r["manifold"] == m.name]
        row = {"manifold": m.name, "d": m.dimension, "D": m.n_features,
               "half": "training" if m.name in halves["training"] else "test",
               "description": m.description,
               "fit_cpu_s": float(np.mean([r["fit_cpu_s"] for r in sub])) if sub else None}
        for e in estimators:
            row[f"{e}_rate"] = _rate(sub, e)
        row["flowpca_values"] = ", ".join(sorted({str(r["flowpca"]) for r in sub}))
        per.append(row)
    lines += [markdown_table([("manifold", "manifold"), ("d", "d"), ("D", "D"),
                              ("half", "half")]
                             + [(f"{e}_rate", f"{e} exact") for e in estimators]
                             + [("flowpca_values", "flowpca's answers"),
                                ("fit_cpu_s", "fit CPU s"), ("description", "what")], per), ""]

    lines += ["## Per family (500 points, seed 0, every noise level)", ""]
    fam = []
    for flow in ["default"] + list(FAMILIES):
        sub = [r for r in rows if r["flow"] == flow and r["n"] == settings["sizes"][0]
               and r["seed"] == settings["seeds"][0]]
        for half, names in halves.items():
            part = [r for r in sub if r["manifold"] in names]
            fam.append({"flow": flow, "half": half, "cases": len(part),
                        "rate": _rate(part, "flowpca"), "mae": _mae(part, "flowpca"),
                        "cpu": float(np.mean([r["fit_cpu_s"] for r in part])) if part
                        else None})
    lines += [markdown_table([("flow", "flow"), ("half", "half"), ("cases", "cases"),
                              ("rate", "exact"), ("mae", "MAE"), ("cpu", "fit CPU s")],
                             fam), "",
              f"`mlp`: {FAMILIES['mlp']}; `maf`: its defaults.", ""]
    (out / f"intrinsic_dimension{suffix}.md").write_text("\n".join(lines) + "\n")
    keys = ["manifold", "d", "D", "noise", "n", "seed", "flow", "flowpca",
            "fitted_dimension", "alpha",
            "n_iter", "fit_cpu_s", "warnings"] + [k for e in SKDIM
                                                  for k in (e, f"{e}_cpu_s")] + rule_keys
    write_csv(out / f"intrinsic_dimension{suffix}.csv", rows, keys)
    return best_rule


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=RESULTS / ".cache" / "intrinsic_dimension")
    args = parser.parse_args(argv)
    settings = dict(manifolds=manifolds.SUITE, noises=NOISES, sizes=SIZES, seeds=SEEDS,
                    params={})
    if args.quick:
        settings = dict(manifolds=[manifolds.BY_NAME[name] for name in (
            "circle", "helix", "sphere", "ball_3d_in_10d")], noises=(0.0,), sizes=(300,),
            seeds=(0,), params={"max_iter": 8})
    env = environment(threads=1)
    start = time.time()
    cases = _cases(settings)
    results = Parallel(n_jobs=args.jobs, verbose=5)(
        delayed(run_case)(case, args.cache) for case in cases)
    rows = []
    for (record, log_variances) in results:
        m = manifolds.BY_NAME[record["manifold"]]
        record = {**record, "d": m.dimension, "D": m.n_features,
                  **candidate_rules(record, log_variances)}
        rows.append(record)
    args.out.mkdir(parents=True, exist_ok=True)
    best = report(rows, settings, env, args.out, "_quick" if args.quick else "",
                  time.time() - start)
    print(f"best rule on the training half: {best}")


if __name__ == "__main__":
    main()
