"""Do NormalizingFlowPCA's defaults beat a Gaussian mixture in seconds?

Held-out log-likelihood and CPU seconds of the defaults against three baselines.

Data sets: every one of ``datasets.NAMES`` (2 000 training and 2 000 test points;
digits: its own 75 / 25 split of the 1 797 rows) and four noisy ones built here:
``moons_noisy`` (:func:`sklearn.datasets.make_moons`, noise 0.05), ``swiss_roll_noisy``
(:func:`~sklearn.datasets.make_swiss_roll`, noise 0.1, divided by 5), ``s_curve_noisy``
and ``sine_noisy`` (the paper's S-curve and sine wave,
:func:`flowpca.datasets.make_s_curve_gaussian` / :func:`~flowpca.datasets.make_sine_wave`,
plus isotropic Gaussian noise of standard deviation 0.05). Each seed (0, 1, 2) changes
the data draw, the split and every method's ``random_state``.

Methods, each scored by its mean held-out log-likelihood (nats per sample, in the data's
units) and timed in CPU seconds (:func:`time.process_time`, one torch thread, one BLAS
thread) for fitting (any tuning included) and, separately, scoring:

- ``default``: ``NormalizingFlowPCA(random_state=seed)``, whatever the package's defaults
  are at run time (the report lists them, and the fitted ``n_layers_``, ``max_iter_``,
  ``n_iter_``, ``batch_size_``, ``learning_rate_init_``, ``alpha_`` where they exist);
  ``model.score(X_test)``. On the paper's S-curve, sine and banana also the round trip
  ``inverse_transform(transform(X_train))`` with all components (fraction back within
  relative error 1e-6, points reported as having another preimage or unconverged).
- ``gmm``: :class:`~sklearn.mixture.GaussianMixture` (full covariances) with the number
  of components chosen by BIC on the training set from 1, 2, 4, 8, 16, 32.
- ``kde``: :class:`~sklearn.neighbors.KernelDensity` (Gaussian), the bandwidth chosen by
  5-fold :class:`~sklearn.model_selection.GridSearchCV` over
  ``np.logspace(-2, 0.5, 12) * X_train.std()``.
- ``zuko``: a plain training loop, ``zuko.flows.NSF(D, transforms=3,
  hidden_features=(64, 64))`` in float32 on the training part's per-feature
  standardization (``-sum(log std)`` added back to the log-likelihood), Adam with
  :class:`torch.optim.lr_scheduler.OneCycleLR` (max_lr 5e-3) over 300 epochs, batch 512,
  10 % of the training points held out and the best validation epoch's weights kept;
  built and trained inside :func:`torch.random.fork_rng` seeded with the seed.

A second experiment draws held-out log-likelihood against CPU seconds on two data sets
(``--curve-datasets``, default the noisy moons and the paper's sine, seed 0):
``NormalizingFlowPCA(flow=family, max_iter=m, random_state=0)`` for the families nsf,
maf, mlp, realnvp, residual and budgets m = 10, 30, 100, 300 epochs, against the mixture
with k = 1, 2, 4, ..., 32 components (each k its own fit).

Writes, under ``--out`` (``benchmarks/results``): ``defaults.md`` (machine, versions,
seeds; per data set the mean and standard error over the seeds of every method's
held-out log-likelihood and CPU seconds, the default's margin over the mixture, and what
the defaults chose), ``defaults.csv`` (one row per data set, seed and method),
``defaults_curve.csv`` and ``defaults.png`` (the curve). ``--quick`` (300 training / 300
test points, seed 0, k up to 4, the default capped at 10 epochs, 5 plain-loop epochs,
budgets 2 and 5 of two families) writes ``defaults_quick.*`` instead. A method that
raises keeps its row, with the error. Asserts nothing.

Usage: ``python benchmarks/defaults.py [--quick] [--datasets a,b] [--seeds 0,1,2]
[--curve-datasets moons_noisy,sine] [--out DIR]``.
"""

import argparse
import copy
import json
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_moons, make_swiss_roll
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

# The working tree's flowpca (not an installed copy) and the sibling modules.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]

import datasets  # noqa: E402
from _figures import plt  # noqa: E402  (Agg backend)
from _report import (environment, header_lines, limited_threads,  # noqa: E402
                     markdown_table, write_csv)
from compare import _status, _summarize_warnings, select  # noqa: E402
from flowpca import NormalizingFlowPCA  # noqa: E402
from flowpca.datasets import make_s_curve_gaussian, make_sine_wave  # noqa: E402

RESULTS = Path(__file__).parent / "results"
STEM = "defaults"
THREADS = 1
NOISE = 0.05  # standard deviation of the noise added to the paper's S-curve and sine
METHODS = {"default": "NormalizingFlowPCA()", "gmm": "GaussianMixture (best BIC)",
           "kde": "KernelDensity (CV bandwidth)", "zuko": "plain zuko NSF loop"}
# Fitted attributes of the default estimator worth recording, where they exist (getattr
# with a None fallback: the set depends on the package version).
FITTED = ("n_layers_", "max_iter_", "n_iter_", "batch_size_", "learning_rate_init_",
          "alpha_")
# The default's round trip inverse_transform(transform(X_train)) (all components) on the
# paper's data sets: rows back within this relative error.
ROUND_TRIP_DATASETS = ("s_curve", "sine", "banana")
ROUND_TRIP_RTOL = 1e-6
ROUND_TRIP_KEYS = ["round_trip", "ambiguous", "unconverged", "inverse_s"]
CSV_KEYS = ["dataset", "n_train", "n_test", "n_features", "seed", "method", "status",
            "test_ll", "fit_s", "score_s", "k", "bandwidth", "epochs", "best_epoch",
            "epoch_s", "flow", *FITTED, *ROUND_TRIP_KEYS, "notes"]
CURVE_KEYS = ["dataset", "seed", "method", "family", "budget", "status", "fit_s",
              "test_ll", "n_iter_", "notes"]


@dataclass(frozen=True)
class Settings:
    """Sizes and budgets of the full run, or of ``--quick``."""

    quick: bool
    n_train: int = 2_000
    n_test: int = 2_000
    seeds: tuple = (0, 1, 2)
    gmm_components: tuple = (1, 2, 4, 8, 16, 32)
    kde_bandwidths: tuple = tuple(np.logspace(-2, 0.5, 12))  # times X_train.std()
    kde_folds: int = 5
    zuko_epochs: int = 300
    zuko_batch: int = 512
    zuko_max_lr: float = 5e-3
    zuko_validation: float = 0.1
    default_max_iter: int = None  # None: the package's default
    curve_datasets: tuple = ("moons_noisy", "sine")
    curve_families: tuple = ("nsf", "maf", "mlp", "realnvp", "residual")
    curve_budgets: tuple = (10, 30, 100, 300)
    curve_seed: int = 0

    @classmethod
    def for_mode(cls, quick):
        if not quick:
            return cls(quick=False)
        return cls(quick=True, n_train=300, n_test=300, seeds=(0,), gmm_components=(1, 2, 4),
                   zuko_epochs=5, default_max_iter=10, curve_families=("mlp", "nsf"),
                   curve_budgets=(2, 5))

    def describe(self):
        return (f"GMM k in {self.gmm_components}; KDE bandwidths "
                f"logspace(-2, 0.5, {len(self.kde_bandwidths)}) x X_train.std(), "
                f"{self.kde_folds}-fold CV; plain loop {self.zuko_epochs} epochs, batch "
                f"{self.zuko_batch}, OneCycleLR max_lr {self.zuko_max_lr}, "
                f"{self.zuko_validation:.0%} validation; default max_iter "
                + ("the package's" if self.default_max_iter is None else
                   f"capped at {self.default_max_iter} (quick)"))


# ---------------------------------------------------------------- data sets
def _split_dataset(name, description, X, n_train, seed):
    """A :class:`datasets.Dataset` of the first ``n_train`` rows of a seeded permutation
    of ``X`` (training) and the rest (test); no latent factors."""
    order = np.random.RandomState(seed + 1).permutation(X.shape[0])
    return datasets.Dataset(name, description, X[order[:n_train]], X[order[n_train:]],
                            seed=seed)


def load_moons_noisy(n_train, n_test, seed):
    X, _ = make_moons(n_train + n_test, noise=0.05, random_state=seed)
    return _split_dataset("moons_noisy", "make_moons(noise=0.05), 2-D", X, n_train, seed)


def load_swiss_roll_noisy(n_train, n_test, seed):
    X, _ = make_swiss_roll(n_train + n_test, noise=0.1, random_state=seed)
    return _split_dataset("swiss_roll_noisy", "make_swiss_roll(noise=0.1) / 5, 3-D", X / 5,
                          n_train, seed)


def _with_noise(make, name, description):
    def load(n_train, n_test, seed):
        rng = np.random.RandomState(seed)
        X, _ = make(n_train + n_test, random_state=rng)
        X = X + rng.normal(scale=NOISE, size=X.shape)
        return _split_dataset(name, f"{description} + N(0, {NOISE}^2 I)", X, n_train, seed)
    return load


NOISY = {
    "moons_noisy": load_moons_noisy,
    "swiss_roll_noisy": load_swiss_roll_noisy,
    "s_curve_noisy": _with_noise(make_s_curve_gaussian, "s_curve_noisy", "paper S-curve"),
    "sine_noisy": _with_noise(make_sine_wave, "sine_noisy", "paper sine wave"),
}
NAMES = tuple(datasets.NAMES) + tuple(NOISY)


def load(name, settings, seed):
    """The data set ``name`` (one of :data:`NAMES`) at the settings' sizes and ``seed``."""
    if name in NOISY:
        return NOISY[name](settings.n_train, settings.n_test, seed)
    loader = datasets._LOADERS[name]
    if name == "digits" and not settings.quick:
        return loader(seed=seed)  # its own 75 / 25 split of the 1 797 rows
    return loader(n_train=settings.n_train, n_test=settings.n_test, seed=seed)


# ---------------------------------------------------------------- methods
def _cpu(fn, *args):
    """``fn(*args)`` and the CPU seconds it took."""
    start = time.process_time()
    value = fn(*args)
    return value, time.process_time() - start


def _plain(value):
    """A JSON- and CSV-friendly copy of a fitted attribute."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def round_trip(model, X):
    """``inverse_transform(transform(X))`` on all components: the fraction of rows back
    within relative error ROUND_TRIP_RTOL (``|x_back - x| / |x - mean_|``), the counts of
    rows the warnings report (another preimage; unconverged) and the CPU seconds."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back, inverse_s = _cpu(lambda: model.inverse_transform(model.transform(X)))
    error = np.linalg.norm(back - X, axis=1) / np.linalg.norm(X - model.mean_, axis=1)

    def reported(pattern):
        found = (re.search(pattern, str(w.message)) for w in caught)
        return sum(int(match.group(1)) for match in found if match)

    return {"round_trip": float(np.mean(error <= ROUND_TRIP_RTOL)),
            "ambiguous": reported(r"^(\d+) of \d+ points have another preimage"),
            "unconverged": reported(r"did not converge for (\d+) of"),
            "inverse_s": inverse_s}


def fit_default(data, settings, seed):
    """``NormalizingFlowPCA(random_state=seed)`` with the package's defaults; on the
    paper's data sets also the round trip of the training points."""
    params = {} if settings.default_max_iter is None else {
        "max_iter": settings.default_max_iter}
    model = NormalizingFlowPCA(random_state=seed, **params)
    _, fit_s = _cpu(model.fit, data.X_train)
    test_ll, score_s = _cpu(model.score, data.X_test)
    row = {"test_ll": float(test_ll), "fit_s": fit_s, "score_s": score_s,
           "flow": _plain(model.flow)}
    row.update({name: _plain(getattr(model, name, None)) for name in FITTED})
    if data.name in ROUND_TRIP_DATASETS:
        row.update(round_trip(model, data.X_train))
    return row


def gaussian_mixtures(X, components, seed):
    """One :class:`GaussianMixture` per number of components (those whose fit fails are
    skipped), each with its own fit's CPU seconds, and the failures' messages."""
    fitted, failures = [], []
    for k in components:
        if k > X.shape[0]:
            continue
        try:
            model, seconds = _cpu(GaussianMixture(k, covariance_type="full",
                                                  random_state=seed).fit, X)
        except Exception as exc:  # noqa: BLE001 -- that k is noted and left out
            failures.append(f"k={k}: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        fitted.append((k, model, seconds))
    return fitted, failures


def fit_gmm(data, settings, seed):
    """The mixture with the best BIC on the training set; all candidates' fits and BICs
    count as its fit time."""
    start = time.process_time()
    fitted, failures = gaussian_mixtures(data.X_train, settings.gmm_components, seed)
    if not fitted:
        raise RuntimeError("no mixture could be fitted: " + "; ".join(failures))
    k, best, _ = min(fitted, key=lambda item: item[1].bic(data.X_train))
    fit_s = time.process_time() - start
    test_ll, score_s = _cpu(best.score, data.X_test)
    return {"test_ll": float(test_ll), "fit_s": fit_s, "score_s": score_s, "k": k,
            "notes": "; ".join(failures)}


def fit_kde(data, settings, seed):
    """Gaussian kernel density, bandwidth by k-fold cross-validation (refitted on the
    whole training set by GridSearchCV)."""
    X = data.X_train
    grid = {"bandwidth": np.asarray(settings.kde_bandwidths) * X.std()}
    search = GridSearchCV(KernelDensity(), grid, cv=settings.kde_folds)
    _, fit_s = _cpu(search.fit, X)
    log_density, score_s = _cpu(search.best_estimator_.score_samples, data.X_test)
    return {"test_ll": float(np.mean(log_density)), "fit_s": fit_s, "score_s": score_s,
            "bandwidth": float(search.best_params_["bandwidth"])}


def _train_nsf(Z, settings):
    """Train zuko's NSF on the standardized ``Z`` (float32) with a validation split;
    return the flow with its best validation epoch's weights, and that epoch."""
    import zuko

    n_val = max(1, int(round(settings.zuko_validation * Z.shape[0])))
    order = torch.randperm(Z.shape[0])
    z = torch.as_tensor(Z, dtype=torch.float32)
    z_val, z_fit = z[order[:n_val]], z[order[n_val:]]
    flow = zuko.flows.NSF(Z.shape[1], transforms=3, hidden_features=(64, 64))
    steps = math.ceil(z_fit.shape[0] / settings.zuko_batch)
    optimizer = torch.optim.Adam(flow.parameters(), lr=settings.zuko_max_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.zuko_max_lr, total_steps=settings.zuko_epochs * steps)
    best, best_state, best_epoch = -math.inf, None, 0
    for epoch in range(1, settings.zuko_epochs + 1):
        flow.train()
        shuffled = z_fit[torch.randperm(z_fit.shape[0])]
        for batch in shuffled.split(settings.zuko_batch):
            loss = -flow().log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        flow.eval()
        with torch.no_grad():
            validation = flow().log_prob(z_val).mean().item()
        if math.isfinite(validation) and validation > best:
            best, best_state, best_epoch = validation, copy.deepcopy(flow.state_dict()), epoch
    if best_state is not None:
        flow.load_state_dict(best_state)
    return flow, best_epoch


def fit_plain_zuko(data, settings, seed):
    """The plain loop (see the module docstring), in a forked, seeded torch RNG."""
    mean, std = data.X_train.mean(axis=0), data.X_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        (flow, best_epoch), fit_s = _cpu(_train_nsf, (data.X_train - mean) / std, settings)

    def score(X):
        z = torch.as_tensor((X - mean) / std, dtype=torch.float32)
        with torch.no_grad():
            log_density = flow().log_prob(z).double().numpy()
        return float(np.mean(log_density) - np.log(std).sum())

    test_ll, score_s = _cpu(score, data.X_test)
    return {"test_ll": test_ll, "fit_s": fit_s, "score_s": score_s,
            "epochs": settings.zuko_epochs, "best_epoch": best_epoch,
            "epoch_s": fit_s / settings.zuko_epochs}


FITTERS = {"default": fit_default, "gmm": fit_gmm, "kde": fit_kde, "zuko": fit_plain_zuko}


def run(fit, *args):
    """``fit(*args)``'s row, with its status (ok, warning, diverged, or the error) and a
    summary of the warnings it raised; an exception is recorded, not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = fit(*args)
        except Exception as exc:  # noqa: BLE001 -- reported in the row, not hidden
            message = str(exc).splitlines()[0][:160] if str(exc) else ""
            row = {"status": f"error: {type(exc).__name__}: {message}"}
    row.setdefault("status", _status(caught))
    row["notes"] = "; ".join(filter(None, [row.get("notes", ""),
                                           _summarize_warnings(caught)]))
    return row


def run_dataset(name, settings, seed):
    """The rows of every method on one data set and seed."""
    data = load(name, settings, seed)
    base = {"dataset": name, "n_train": data.X_train.shape[0],
            "n_test": data.X_test.shape[0], "n_features": data.n_features, "seed": seed}
    rows = []
    for method, fit in FITTERS.items():
        row = {**base, "method": method, **run(fit, data, settings, seed)}
        rows.append(row)
        print(f"{name:17s} seed {seed} {method:8s} {row['status'][:50]:50s} "
              f"LL {_num(row.get('test_ll')):>9s}  fit {_num(row.get('fit_s')):>8s} CPU s",
              flush=True)
    return rows


# ---------------------------------------------------------------- the curve
def fit_flow_budget(data, family, max_iter, seed):
    model = NormalizingFlowPCA(flow=family, max_iter=max_iter, random_state=seed)
    _, fit_s = _cpu(model.fit, data.X_train)
    return {"fit_s": fit_s, "test_ll": float(model.score(data.X_test)),
            "n_iter_": _plain(getattr(model, "n_iter_", None))}


def curve_rows(name, settings):
    """Held-out log-likelihood against CPU seconds on one data set: every family at every
    budget, and the mixture at every number of components."""
    seed = settings.curve_seed
    data = load(name, settings, seed)
    base = {"dataset": name, "seed": seed}
    rows = []
    for family in settings.curve_families:
        for budget in settings.curve_budgets:
            row = {**base, "method": "nfpca", "family": family, "budget": budget,
                   **run(fit_flow_budget, data, family, budget, seed)}
            rows.append(row)
            print(f"curve {name:17s} {family:9s} max_iter {budget:4d} "
                  f"{row['status'][:40]:40s} LL {_num(row.get('test_ll')):>9s}  fit "
                  f"{_num(row.get('fit_s')):>8s} CPU s", flush=True)
    fitted, failures = gaussian_mixtures(data.X_train, settings.gmm_components, seed)
    for k, model, seconds in fitted:
        rows.append({**base, "method": "gmm", "family": "gmm", "budget": k,
                     "status": "ok", "fit_s": seconds,
                     "test_ll": float(model.score(data.X_test)), "notes": ""})
    for failure in failures:
        rows.append({**base, "method": "gmm", "family": "gmm", "status": "error",
                     "notes": failure})
    return rows


def curve_figure(path, rows, main_rows, names, seed):
    """One panel per data set: held-out LL against fit CPU seconds (log scale), a line
    per flow family (points labelled by max_iter) and the mixture's (labelled by k);
    the seed's default, KDE and plain-loop fits as single markers where they ran. Fits
    worse than one Gaussian by more than 1 nat are cut off."""
    fig, axes = plt.subplots(1, len(names), figsize=(6.2 * len(names), 4.6), squeeze=False)
    markers = {"default": ("*", 14), "kde": ("D", 7), "zuko": ("P", 9)}
    for ax, name in zip(axes[0], names):
        block = [r for r in rows if r["dataset"] == name and _ok(r)]
        families = list(dict.fromkeys(r["family"] for r in block))
        for color, family in zip(plt.cm.tab10.colors, families):
            points = sorted((r["fit_s"], r["test_ll"], r["budget"]) for r in block
                            if r["family"] == family)
            gmm = family == "gmm"
            ax.plot([p[0] for p in points], [p[1] for p in points], "--s" if gmm else "-o",
                    ms=4, color="k" if gmm else color,
                    label="GaussianMixture (k)" if gmm else f"{family} (max_iter)")
            for seconds, ll, budget in points:
                ax.annotate(str(budget), (seconds, ll), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        singles = [r for r in main_rows if r["dataset"] == name and r["seed"] == seed
                   and r["method"] in markers and _ok(r)]
        for row in singles:
            marker, size = markers[row["method"]]
            ax.plot(row["fit_s"], row["test_ll"], marker, ms=size, color="0.3",
                    linestyle="none", label=METHODS[row["method"]])
        values = [r["test_ll"] for r in block + singles]
        gaussian = [r["test_ll"] for r in block if r["family"] == "gmm" and r["budget"] == 1]
        if values:
            low, top = min(values), max(values)
            if gaussian:
                low = max(low, gaussian[0] - 1.0)
            pad = 0.05 * (top - low) or 0.1
            ax.set_ylim(low - pad, top + pad)
            below = sum(v < low - pad for v in values)
            if below:
                ax.text(0.98, 0.02, f"{below} fit(s) below the panel", fontsize=7,
                        ha="right", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_xlabel("fit CPU seconds (1 thread)")
        ax.set_ylabel("held-out log-likelihood (nats/sample)")
        ax.set_title(f"{name}, seed {seed}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the report
def _ok(row):
    return not row.get("status", "").startswith("error") and row.get("test_ll") is not None \
        and np.isfinite(row["test_ll"])


def _num(value, digits=3):
    return "" if value is None else f"{value:.{digits}f}" if abs(value) < 1e5 \
        else f"{value:.{digits - 1}e}"


def _mean_se(values, digits=3):
    """``mean ± standard error`` (the mean only for one value)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None, None, ""
    mean = float(values.mean())
    se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None
    text = _num(mean, digits) + ("" if se is None else f" ± {_num(se, digits)}")
    return mean, se, text


def _cell(rows, key, digits=3):
    """Mean ± s.e. of ``key`` over the rows that succeeded; the error where none did."""
    good = [r for r in rows if _ok(r) and r.get(key) is not None]
    if not good:
        errors = [r["status"] for r in rows if r["status"].startswith("error")]
        return errors[0] if errors else "no finite value" if rows else ""
    text = _mean_se([r[key] for r in good], digits)[2]
    return text if len(good) == len(rows) else f"{text} ({len(good)}/{len(rows)} seeds)"


def _joined(values):
    """The distinct values, in order (floats to 3 significant digits); '-' for none."""
    values = list(dict.fromkeys("" if v is None else f"{v:.3g}" if isinstance(v, float)
                                else str(v) for v in values))
    return ", ".join(values) if any(values) else "-"


def summary_rows(rows, names):
    """Per data set: every method's mean ± s.e., and the default's paired margin over the
    mixture."""
    out = []
    for name in names:
        block = [r for r in rows if r["dataset"] == name]
        if not block:
            continue
        by = {m: [r for r in block if r["method"] == m] for m in METHODS}
        line = {"dataset": name, "n": f"{block[0]['n_train']}/{block[0]['n_test']}, "
                                      f"D={block[0]['n_features']}"}
        for method, part in by.items():
            line[f"{method}_ll"] = _cell(part, "test_ll")
            line[f"{method}_s"] = _cell(part, "fit_s", 2)
        line["gmm_k"] = _joined(r.get("k") for r in by["gmm"] if _ok(r))
        line["zuko_epoch_s"] = _cell(by["zuko"], "epoch_s", 4)
        pairs = {r["seed"]: r["test_ll"] for r in by["gmm"] if _ok(r)}
        margins = [r["test_ll"] - pairs[r["seed"]] for r in by["default"]
                   if _ok(r) and r["seed"] in pairs]
        line["margin"] = _mean_se(margins)[2]
        default_ll = [r["test_ll"] for r in by["default"] if _ok(r)]
        gmm_ll = [r["test_ll"] for r in by["gmm"] if _ok(r)]
        line["beats"] = ("yes" if np.mean(default_ll) >= np.mean(gmm_ll) else "no") \
            if default_ll and gmm_ll else "n/a"
        out.append(line)
    return out


def round_trip_rows(rows, names):
    """Per data set and seed: the default's round trip (where measured)."""
    return [{"dataset": r["dataset"], "seed": r["seed"], "n_train": r["n_train"],
             **{key: _num(r.get(key), 4) if key == "round_trip" else
                _num(r.get(key), 1) if key == "inverse_s" else r.get(key)
                for key in ROUND_TRIP_KEYS}}
            for name in names for r in rows
            if r["dataset"] == name and r["method"] == "default"
            and r.get("round_trip") is not None]


def choice_rows(rows, names):
    """Per data set: the default's flow and fitted attributes (values over the seeds)."""
    out = []
    for name in names:
        part = [r for r in rows if r["dataset"] == name and r["method"] == "default"]
        if part:
            out.append({"dataset": name, "flow": _joined(r.get("flow") for r in part),
                        **{key: _joined(r.get(key) for r in part) for key in FITTED},
                        "status": _joined(r["status"] for r in part),
                        "notes": _joined(r.get("notes") for r in part)})
    return out


SUMMARY_COLUMNS = [
    ("dataset", "data"), ("n", "train/test, D"),
    ("default_ll", "default LL"), ("default_s", "default CPU s"),
    ("gmm_ll", "GMM LL"), ("gmm_k", "GMM k"), ("gmm_s", "GMM CPU s"),
    ("kde_ll", "KDE LL"), ("kde_s", "KDE CPU s"),
    ("zuko_ll", "plain zuko LL"), ("zuko_s", "zuko CPU s"),
    ("zuko_epoch_s", "zuko CPU s/epoch"),
    ("margin", "default − GMM"), ("beats", "default ≥ GMM"),
]
CURVE_COLUMNS = [("dataset", "data"), ("family", "model"), ("budget", "max_iter / k"),
                 ("n_iter_", "epochs run"), ("fit_s", "fit CPU s"), ("test_ll", "test LL"),
                 ("status", "status")]


def paths(out, quick):
    suffix = "_quick" if quick else ""
    return {kind: out / f"{STEM}{suffix}{ext}" for kind, ext in (
        ("md", ".md"), ("csv", ".csv"), ("curve_csv", "_curve.csv"), ("png", ".png"))}


def write_report(rows, curve, names, settings, env, files, seconds):
    files["md"].parent.mkdir(parents=True, exist_ok=True)
    write_csv(files["csv"], rows, CSV_KEYS)
    write_csv(files["curve_csv"], curve, CURVE_KEYS)
    curve_names = [n for n in settings.curve_datasets if any(r["dataset"] == n for r in curve)]
    if curve_names:
        curve_figure(files["png"], curve, rows, curve_names, settings.curve_seed)
    errors = sorted({(r["dataset"], r["seed"], r["method"], r["status"]) for r in rows
                     if r["status"].startswith("error")})
    defaults = NormalizingFlowPCA().get_params()
    summary = markdown_table(SUMMARY_COLUMNS, summary_rows(rows, names))
    text = [
        "# NormalizingFlowPCA's defaults against a Gaussian mixture, KDE and a plain zuko "
        "loop" + (" (quick)" if settings.quick else ""), "",
        *header_lines(env),
        f"- seeds: {', '.join(map(str, settings.seeds))} (data draw, split and every "
        f"method's random_state); curve: seed {settings.curve_seed}",
        f"- sizes: {settings.n_train} training / {settings.n_test} test points (digits: "
        + ("the same" if settings.quick else "its own 75/25 split of the 1797 rows") + ")",
        f"- NormalizingFlowPCA defaults at run time: `{json.dumps(defaults, default=str)}`",
        f"- settings: {settings.describe()}",
        f"- total wall time: {seconds:.0f} s",
        "",
        "Held-out LL: mean log-likelihood of the test points, nats per sample, in the data's "
        "units (higher is better); mean ± standard error over the seeds (the mean alone for "
        "one seed). CPU s: time.process_time() of the fit (GMM: all candidate k and their "
        "BIC; KDE: the bandwidth search and its refit), one torch and one BLAS thread; the "
        "scoring seconds are in the CSV. default − GMM: the paired (same seed) difference of "
        "held-out LL; default ≥ GMM: whether the default's mean LL is at least the "
        "mixture's. On the noise-free manifolds (s_curve, sine, swiss_roll, embedded_plane) "
        "the density is singular: the LL there mostly measures the variance floor "
        "(alpha, reg_covar, bandwidth).",
        "",
        "## Held-out log-likelihood and CPU seconds, per data set",
        "",
        summary,
        "",
        "## What the defaults chose (values over the seeds)",
        "",
        markdown_table([("dataset", "data"), ("flow", "flow")]
                       + [(key, key) for key in FITTED]
                       + [("status", "status"), ("notes", "notes")],
                       choice_rows(rows, names)),
        "",
        "## Round trips",
        "",
        "inverse_transform(transform(X_train)) with all components, on the training points "
        f"of {', '.join(ROUND_TRIP_DATASETS)}: the fraction back within relative error "
        f"{ROUND_TRIP_RTOL:g} (|x_back - x| / |x - mean_|), the points inverse_transform "
        "reported as having another preimage (AmbiguousInverseWarning) or as unconverged "
        "(ConvergenceWarning), and the CPU seconds of transform + inverse_transform.",
        "",
        markdown_table([("dataset", "data"), ("seed", "seed"), ("n_train", "points"),
                        ("round_trip", f"back within {ROUND_TRIP_RTOL:g}"),
                        ("ambiguous", "another preimage"), ("unconverged", "unconverged"),
                        ("inverse_s", "CPU s")], round_trip_rows(rows, names)),
        "",
        "## Held-out log-likelihood against CPU seconds",
        "",
        f"`NormalizingFlowPCA(flow=family, max_iter=m, random_state={settings.curve_seed})` "
        f"for m in {settings.curve_budgets}, families {', '.join(settings.curve_families)}; "
        f"GaussianMixture(k, covariance_type='full') for k in {settings.gmm_components} "
        "(each k's own fit); the default, KDE and plain-loop fits of the same seed as single "
        "markers. Panels cut off fits worse than one Gaussian by more than 1 nat.",
        "",
        f"Figure: `{files['png'].name}`" if curve_names else "No curve (--curve-datasets '').",
        "",
        markdown_table(CURVE_COLUMNS, curve),
        "",
        f"Per-seed rows: `{files['csv'].name}`; curve points: `{files['curve_csv'].name}`.",
        "",
    ]
    if errors:
        text += ["## Errors", ""] + [f"- {d}, seed {s}, {m}: {e}" for d, s, m, e in errors]
        text.append("")
    files["md"].write_text("\n".join(text))
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300/300 points, one seed, "
                        "short budgets (smoke test); writes defaults_quick.*")
    parser.add_argument("--datasets", default="", help=f"comma-separated, from "
                        f"{','.join(NAMES)} (globs allowed, e.g. '*_noisy'; default all)")
    parser.add_argument("--seeds", default="", help="comma-separated ints (default 0,1,2; "
                        "0 with --quick)")
    parser.add_argument("--curve-datasets", default=None, help="data sets of the LL "
                        "against CPU seconds curve (default moons_noisy,sine; '' skips it)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    settings = Settings.for_mode(args.quick)
    if args.seeds:
        settings = replace(settings, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.curve_datasets is not None:
        settings = replace(settings, curve_datasets=tuple(
            select(NAMES, args.curve_datasets) if args.curve_datasets.strip() else ()))
    names = select(NAMES, args.datasets)
    files = paths(args.out, args.quick)
    env = environment(THREADS)
    try:
        import zuko
        env["zuko"] = zuko.__version__
    except ImportError as exc:
        env["zuko"] = f"not available ({exc})"
    rows, curve, start = [], [], time.perf_counter()
    with limited_threads(THREADS):
        for name in names:
            for seed in settings.seeds:
                rows += run_dataset(name, settings, seed)
            write_report(rows, curve, names, settings, env, files,
                         time.perf_counter() - start)
        for name in settings.curve_datasets:
            curve += curve_rows(name, settings)
    summary = write_report(rows, curve, names, settings, env, files,
                           time.perf_counter() - start)
    print()
    print(summary)
    written = [str(path) for kind, path in files.items() if kind != "png" or curve]
    print(f"\nwrote {', '.join(written)}")


if __name__ == "__main__":
    main()
