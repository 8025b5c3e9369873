"""The methods the comparison runs, each one entry of a table built from its name.

A :class:`Method` turns a :class:`~datasets.Dataset` into a :class:`Fitted` model
(tuning its hyperparameters on the training set only) under a :class:`Budget`. The
baselines are scikit-learn's PCA, KernelPCA, Isomap, LocallyLinearEmbedding,
GaussianMixture and KernelDensity; every registered flow family of
:class:`~flowpca.NormalizingFlowPCA` adds two entries (``alpha = 0`` and tuned alpha), or
one "not available" entry when its module does not import.

Tuning protocols (all on the training set, never the test set):

- KernelPCA (rbf): ``gamma = g / (n_features * v)`` (``v`` the mean feature variance) and
  the inverse map's ridge ``alpha`` on a grid, chosen by the relative reconstruction
  error with ``k`` components (``fit_inverse_transform=True``) on a 25 % validation split
  of at most ``kernel_tune_points`` training points.
- GaussianMixture (full covariances): the number of components by the mean
  log-likelihood on a 20 % validation split, then refitted on the whole training set.
- KernelDensity (Gaussian): the bandwidth ``b * sqrt(v)`` by 3-fold ``GridSearchCV``
  (mean log-likelihood) on at most ``kernel_points`` training points, then refitted on
  the whole training set.
- NormalizingFlowPCA: ``alpha = r * v`` on a grid, chosen by the mean log-likelihood on a
  20 % validation split of at most ``tune_points`` training points (shorter fits:
  ``tune_steps`` gradient steps or ``tune_cpu_seconds``), then refitted on the whole
  training set (``flow_steps`` or ``flow_cpu_seconds``, whichever ends first).
- Isomap (10 neighbours) and LLE (12 neighbours) are not tuned.

KernelPCA, Isomap, LLE and the KDE bandwidth search cost O(n^2) memory or worse: they
see at most ``kernel_points`` training points.

The density models (GaussianMixture, KernelDensity, every flow family) also draw samples
(``Fitted.sample``, seeded): the comparison measures how far they lie from the true
manifold.
"""

import importlib
import math
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA, KernelPCA
from sklearn.manifold import Isomap, LocallyLinearEmbedding
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from flowpca import NormalizingFlowPCA
from flowpca.flows._families import family_modules, family_names

from _metrics import relative_reconstruction_error

# Architecture per flow family, where the comparison departs from the estimator's
# defaults: the paper's RealNVP comparator has 6 couplings.
FAMILY_SETTINGS = {"realnvp": {"n_layers": 6}}


@dataclass(frozen=True)
class Budget:
    """How much work each method may do (``--quick`` or the full suite)."""

    quick: bool
    flow_steps: int = 4000           # gradient steps of a final flow fit, at most
    tune_steps: int = 600            # gradient steps of each alpha-tuning fit, at most
    # CPU seconds of training per final / tuning flow fit: every family gets the same
    # compute, and training stops early (keeping its best state) where it would need
    # more. Measured costs per step (1 thread, batch 200, penalty on) range from 3 ms
    # (mlp, D = 3) to 430 ms (nsf, D = 64), so equal steps would not be a fair budget.
    flow_cpu_seconds: float = 10.0
    tune_cpu_seconds: float = 3.0
    alpha_grid: tuple = (1e-4, 1e-3, 1e-2)   # times the mean feature variance
    tune_points: int = 1000
    kernel_points: int = 2000
    kernel_tune_points: int = 1000
    kpca_gammas: tuple = (0.1, 0.3, 1.0, 3.0, 10.0)
    kpca_ridges: tuple = (1e-3, 1e-1)
    gmm_components: tuple = (1, 2, 4, 8, 16, 32)
    kde_bandwidths: tuple = tuple(np.logspace(-2.5, 0, 11))  # times sqrt(v)
    trust_points: int = 1000
    sample_points: int = 1000        # draws from each density model (off-manifold distance)
    reconstruction_points: int = 200
    # NormalizingFlowPCA.inverse_transform of a nonlinear flow is iterative, slower in
    # high dimension (about 20-70 ms per point at D = 64): fewer points there.
    slow_inverse_max_features: int = 8
    slow_inverse_points: int = 50
    timeout: int = 180               # CPU seconds per method and data set

    @classmethod
    def for_mode(cls, quick):
        if not quick:
            return cls(quick=False)
        return cls(quick=True, flow_steps=60, tune_steps=20, alpha_grid=(1e-4, 1e-2),
                   tune_points=300, kernel_points=300, kernel_tune_points=300,
                   kpca_gammas=(0.3, 3.0), kpca_ridges=(1e-2,), gmm_components=(1, 4),
                   kde_bandwidths=(0.03, 0.3), trust_points=100, reconstruction_points=10,
                   sample_points=100,
                   slow_inverse_points=0, timeout=20, flow_cpu_seconds=3.0,
                   tune_cpu_seconds=1.0)


@dataclass
class Fitted:
    """A fitted method, as the evaluation sees it: callables or None."""

    model: object
    transform: object = None          # X -> first k components
    reconstruct: object = None        # X -> X_hat through k components
    score_samples: object = None      # X -> log-density (nats)
    sample: object = None             # (n, seed) -> n draws from the fitted density
    slow_inverse: bool = False        # reconstruct is iterative (few points in high D)
    params: dict = field(default_factory=dict)
    tune_seconds: float = 0.0
    fit_seconds: float = 0.0


@dataclass
class Method:
    """One row per data set of the comparison."""

    key: str                  # command-line name, e.g. 'nfpca-mlp-tuned'
    label: str                # table name
    fit: object = None        # (dataset, budget) -> Fitted
    family: str = ""          # flow family, '' for the baselines
    unavailable: str = ""     # why the method cannot run here
    default: bool = True      # part of a run without --methods


def mean_variance(X):
    """Mean per-feature variance: the unit of ``alpha`` and of the kernel scales."""
    return float(X.var(axis=0).mean())


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _quietly(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _split(X, fraction):
    n_fit = max(2, int(round((1 - fraction) * X.shape[0])))
    return X[:n_fit], X[n_fit:]


def _with_inverse(model):
    return lambda X: model.inverse_transform(model.transform(X))


# ---------------------------------------------------------------- baselines
def fit_pca(data, budget):
    model, seconds = _timed(lambda: PCA(data.n_components).fit(data.X_train))
    return Fitted(model, model.transform, _with_inverse(model), model.score_samples,
                  fit_seconds=seconds)


def fit_kernel_pca(data, budget):
    X = data.X_train[:budget.kernel_points]
    X_fit, X_val = _split(X[:budget.kernel_tune_points], 0.25)
    gamma0 = 1.0 / (data.n_features * mean_variance(X))

    def make(gamma, ridge):
        return KernelPCA(data.n_components, kernel="rbf", gamma=gamma, alpha=ridge,
                         fit_inverse_transform=True, random_state=data.seed)

    start, errors = time.perf_counter(), {}
    for g in budget.kpca_gammas:
        for ridge in budget.kpca_ridges:
            model = _quietly(lambda: make(g * gamma0, ridge).fit(X_fit))
            errors[(g, ridge)] = relative_reconstruction_error(
                X_val, model.inverse_transform(model.transform(X_val)))
    g, ridge = min(errors, key=errors.get)
    tune_seconds = time.perf_counter() - start
    model, seconds = _timed(lambda: make(g * gamma0, ridge).fit(X))
    return Fitted(model, model.transform, _with_inverse(model),
                  params={"gamma": g * gamma0, "ridge": ridge, "n_fit": X.shape[0]},
                  tune_seconds=tune_seconds, fit_seconds=seconds)


def fit_isomap(data, budget):
    X = data.X_train[:budget.kernel_points]
    model, seconds = _timed(lambda: Isomap(n_neighbors=10, n_components=data.n_components)
                            .fit(X))
    return Fitted(model, model.transform, params={"n_neighbors": 10, "n_fit": X.shape[0]},
                  fit_seconds=seconds)


def fit_lle(data, budget):
    X = data.X_train[:budget.kernel_points]
    model, seconds = _timed(lambda: LocallyLinearEmbedding(
        n_neighbors=12, n_components=data.n_components, random_state=data.seed).fit(X))
    return Fitted(model, model.transform, params={"n_neighbors": 12, "n_fit": X.shape[0]},
                  fit_seconds=seconds)


def fit_gaussian_mixture(data, budget):
    X_fit, X_val = _split(data.X_train, 0.2)

    def make(k):
        return GaussianMixture(k, covariance_type="full", random_state=data.seed)

    start, scores = time.perf_counter(), {}
    for k in budget.gmm_components:
        if k <= X_fit.shape[0]:
            scores[k] = _quietly(lambda: make(k).fit(X_fit)).score(X_val)
    k = max(scores, key=scores.get)
    tune_seconds = time.perf_counter() - start
    model, seconds = _timed(lambda: make(k).fit(data.X_train))
    return Fitted(model, score_samples=model.score_samples,
                  sample=lambda n, seed: _gmm_sample(model, n, seed),
                  params={"n_components": k}, tune_seconds=tune_seconds,
                  fit_seconds=seconds)


def _gmm_sample(model, n, seed):
    """``n`` draws of a fitted GaussianMixture (its ``sample`` draws from its own
    ``random_state``: set to ``seed`` for the draw, then restored)."""
    previous = model.random_state
    model.random_state = seed
    try:
        return model.sample(n)[0]
    finally:
        model.random_state = previous


def fit_kernel_density(data, budget):
    scale = math.sqrt(mean_variance(data.X_train))
    grid = {"bandwidth": [b * scale for b in budget.kde_bandwidths]}
    search = GridSearchCV(KernelDensity(), grid, cv=3)
    _, tune_seconds = _timed(lambda: search.fit(data.X_train[:budget.kernel_points]))
    bandwidth = search.best_params_["bandwidth"]
    model, seconds = _timed(lambda: KernelDensity(bandwidth=bandwidth).fit(data.X_train))
    return Fitted(model, score_samples=model.score_samples,
                  sample=lambda n, seed: model.sample(n, random_state=seed),
                  params={"bandwidth": bandwidth}, tune_seconds=tune_seconds,
                  fit_seconds=seconds)


# ---------------------------------------------------------------- flows
@contextmanager
def cpu_timer(timer, signum, seconds, expire):
    """Call ``expire(signum, frame)`` once after ``seconds`` of the interval timer
    ``timer`` (``signal.ITIMER_PROF``: this process's CPU time; ``ITIMER_VIRTUAL``: its
    user CPU time), which delivers ``signum``; previous handler restored on exit."""
    previous = signal.signal(signum, expire)
    signal.setitimer(timer, seconds)
    try:
        yield
    finally:
        signal.setitimer(timer, 0)
        signal.signal(signum, previous)


@contextmanager
def cpu_budget(seconds):
    """Interrupt training after ``seconds`` of this process's user CPU time, as a user's
    Ctrl-C would: the estimator's training loop catches the interrupt between steps,
    keeps its best state and warns. Outside training (the default SIGINT handler is in
    place) the timer is ignored, so the fit's own work after training is never cut."""
    def expire(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)
    with cpu_timer(signal.ITIMER_VIRTUAL, signal.SIGVTALRM, seconds, expire):
        yield


def _fit_within(model, X, seconds):
    """``model.fit(X)`` with training stopped after ``seconds`` of user CPU time;
    returns whether the budget stopped it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cpu_budget(seconds):
            model.fit(X)
    stopped = any("interrupted" in str(w.message) for w in caught)
    for w in caught:  # everything else reaches the caller's record
        if "interrupted" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return stopped


def epochs_for(n_samples, steps, batch_size=200):
    """Epochs that make about ``steps`` mini-batch steps on ``n_samples`` points."""
    return max(1, math.ceil(steps / math.ceil(n_samples / min(batch_size, n_samples))))


def flow_estimator(family, alpha, n_components, n_samples, steps, seed):
    """The :class:`~flowpca.NormalizingFlowPCA` the comparison fits for ``family``."""
    return NormalizingFlowPCA(n_components, flow=family, alpha=alpha,
                              max_iter=epochs_for(n_samples, steps), random_state=seed,
                              **FAMILY_SETTINGS.get(family, {}))


def tune_alpha(family, data, budget):
    """``alpha`` with the best validation log-likelihood, and every grid point's score.

    Fits on 80 % of at most ``budget.tune_points`` training points and scores the other
    20 %; a fit that raises scores ``-inf``.
    """
    X_fit, X_val = _split(data.X_train[:budget.tune_points], 0.2)
    scale = mean_variance(data.X_train)
    scores = {}
    for ratio in budget.alpha_grid:
        alpha = ratio * scale
        model = flow_estimator(family, alpha, data.n_components, X_fit.shape[0],
                               budget.tune_steps, data.seed)
        try:
            _quietly(lambda: _fit_within(model, X_fit, budget.tune_cpu_seconds))
            scores[alpha] = float(model.score(X_val))
        except Exception:  # noqa: BLE001 -- a failed grid point is scored, not fatal
            scores[alpha] = -math.inf
        if not np.isfinite(scores[alpha]):
            scores[alpha] = -math.inf
    if all(s == -math.inf for s in scores.values()):
        raise RuntimeError(f"every alpha on the grid failed for flow={family!r}")
    return max(scores, key=scores.get), scores


def flow_fitter(family, tuned):
    """The fit function of ``NormalizingFlowPCA(flow=family)``, with ``alpha = 0`` or
    tuned."""
    def fit(data, budget):
        params, tune_seconds = {}, 0.0
        alpha = 0.0
        if tuned:
            (alpha, scores), tune_seconds = _timed(lambda: tune_alpha(family, data, budget))
            params["validation_ll"] = {f"{a:.3g}": round(s, 3) for a, s in scores.items()}
        model = flow_estimator(family, alpha, data.n_components, data.X_train.shape[0],
                               budget.flow_steps, data.seed)
        stopped, seconds = _timed(lambda: _fit_within(model, data.X_train,
                                                      budget.flow_cpu_seconds))
        params = {"alpha": alpha, "epochs": getattr(model, "n_iter_", None),
                  "cpu_budget_reached": stopped, **params}
        return Fitted(model, model.transform, _with_inverse(model), model.score_samples,
                      lambda n, seed: model.sample(n, random_state=seed),
                      slow_inverse=family != "linear", params=params,
                      tune_seconds=tune_seconds, fit_seconds=seconds)
    return fit


def family_import_error(family):
    """Why the module of flow family ``family`` does not import ('' when it does)."""
    module = dict(zip(family_names(), family_modules()))[family]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"not available (ImportError: {exc})"
    return ""


# Families with an alpha = 0 row in the default run (the paper's flows and its RealNVP
# comparator); the others run with tuned alpha only, unless selected with --methods.
ALPHA0_BY_DEFAULT = ("linear", "mlp", "realnvp")


def flow_methods():
    """Two entries per importable flow family, one 'not available' entry per other."""
    methods = []
    for family in family_names():
        error = family_import_error(family)
        if error:
            methods.append(Method(f"nfpca-{family}", f"NFPCA[{family}]", family=family,
                                  unavailable=error))
            continue
        methods.append(Method(f"nfpca-{family}-alpha0", f"NFPCA[{family}] alpha=0",
                              flow_fitter(family, tuned=False), family,
                              default=family in ALPHA0_BY_DEFAULT))
        methods.append(Method(f"nfpca-{family}-tuned", f"NFPCA[{family}] alpha tuned",
                              flow_fitter(family, tuned=True), family))
    return methods


def all_methods():
    """The full method table, baselines first."""
    return [
        Method("pca", "PCA", fit_pca),
        Method("kpca", "KernelPCA (rbf)", fit_kernel_pca),
        Method("isomap", "Isomap", fit_isomap),
        Method("lle", "LLE", fit_lle),
        Method("gmm", "GaussianMixture", fit_gaussian_mixture),
        Method("kde", "KernelDensity", fit_kernel_density),
        *flow_methods(),
    ]
