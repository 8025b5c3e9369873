"""The flow families the estimator builds by name (``flow='mlp'``, ``'realnvp'``, ...).

Each family is a builder ``build(X, settings) -> Flow``: ``X`` is the centered training
data as a tensor (its device and dtype are the flow's) and ``settings`` a
:class:`FlowSettings`. A family reads the settings it uses and validates its own
``flow_params`` with :meth:`FlowSettings.params`. Builders are imported lazily, so an
optional dependency (zuko) is needed only by the families that use it.
"""

import importlib
import math
from numbers import Real

from ._base import Flow, FlowSettings  # noqa: F401 (re-exported: the builders' argument)
from ._bilipschitz import BiLipschitzMLPFlow
from .mlp import MLPFlow

# name -> "module:builder" (module relative to flowpca.flows)
_FAMILIES = {
    "linear": "linear:build_linear",
    "mlp": "_families:build_mlp",  # plain or bi-Lipschitz: two modules
    "realnvp": "coupling:build_realnvp",
    "residual": "residual:build_residual",
    "implicit": "implicit:build_implicit",
    "nsf": "zuko:build_nsf",
    "injective": "injective:build_injective",
    "maf": "zuko:build_maf",
}


# ---------------------------------------------------------------------------- defaults
# What each estimator parameter left at 'auto' resolves to, per family: a value, or a
# function of the training set's shape (rows left after the validation split, features).
# Measured on 2 000-point draws of noisy two moons, the banana, the paper's sine and
# S-curve and scikit-learn's swiss roll / 5 (one thread; benchmarks/results/defaults.md
# has the table that holds them against a Gaussian mixture).


def _nsf_batch_size(n_samples, n_features):
    # A quarter of the data per step, within [64, 512]: 4 steps per epoch at 2 000 points
    # (batch 512 measured best of 128 / 256 / 512 with the cosine schedule).
    return int(min(512, max(64, math.ceil(n_samples / 4))))


def _nsf_max_iter(n_samples, n_features):
    # About 1 000 optimizer steps (250 epochs of 4 steps at 2 000 points, about 10 CPU
    # seconds on one thread for D = 2; 500 epochs gained only on noise-free manifolds,
    # whose likelihood has no maximum), within [50, 250] epochs.
    steps_per_epoch = math.ceil(n_samples / _nsf_batch_size(n_samples, n_features))
    return int(min(250, max(50, math.ceil(1000 / steps_per_epoch))))


def _penalty_by_features(n_samples, n_features):
    # The exact norm costs ~D extra tangent passes, Hutchinson's estimate one.
    return "exact" if n_features <= 8 else "hutchinson"


# Today's defaults of every family that was not re-measured; 'mlp' is the paper's model
# (8 asinh layers, alpha 5e-5), whose settings were chosen on the paper's S-curve
# (benchmarks/results/s_curve_tuning.md).
_PAPER_DEFAULTS = {
    "n_layers": 8, "max_iter": 2000, "batch_size": 200, "learning_rate_init": 3e-2,
    "learning_rate": "adaptive", "early_stopping": False, "alpha": 5e-5,
    "penalty_estimator": _penalty_by_features, "n_iter_no_change": 40,
    "training_dtype": None, "max_grad_norm": 10.0,
}
# zuko's flows (measured with a plain zuko loop, seed 0): 3 layers (5 gained 0.005-0.02
# nats on moons and the banana at 1.8x the time), an annealed schedule from 1e-2 (with
# the estimator, unclipped gradients, seeds 0-2: against 5e-3 +0.004 to +0.16 nats on
# moons and the S-curve, -0.02 to +0.12 on the sine, within 0.02 on the banana and the
# noisy S-curve; batches of 900 as good on noisy data, 0.3-0.9 nats worse on the
# noise-free sine and S-curve),
# early stopping on a held-out tenth after 50 epochs without progress (over the 30 fits
# of benchmarks/defaults.py's 10 sets x 3 seeds the longest plateau before the best
# epoch was 74 epochs once (banana seed 0: stopping at 50 costs 0.009 validation nats),
# 44 otherwise; 30 lost 0.02-0.08 nats on moons and the noisy swiss roll; 50 instead of
# 100 stops digits after ~70 instead of ~120 epochs, the cosine schedule and the
# restored weights being otherwise the same), float32
# training (the fitted flow is cast back to float64), and alpha chosen by held-out
# likelihood from (0, 1e-3 x the mean feature variance): on the banana, moons, sine and
# S-curve a penalty of 1e-4 to 1e-2 x the variance lowered the held-out likelihood (by
# 0.002 to 1.6 nats) at 2-2.5x the cost per step, so it is tried only as a fine-tune.
_ZUKO_DEFAULTS = {
    "n_layers": 3, "max_iter": _nsf_max_iter, "batch_size": _nsf_batch_size,
    "learning_rate_init": 1e-2, "learning_rate": "cosine", "early_stopping": True,
    "alpha": ("validation", (0.0, 1e-3)), "penalty_estimator": "hutchinson",
    "n_iter_no_change": 50, "training_dtype": "float32", "max_grad_norm": math.inf,
}
# Injective flows (benchmarks/injective.py, training half of benchmarks/manifolds.py's
# curves and surfaces, 1 000 points, seed 0): the paper's settings (8 body layers, 3e-2,
# batches of 200, 2 000 epochs) put samples far off the manifold (mean distance 0.05 to
# 1 154 diameters: a few latent-tail samples land thousands of diameters away; median
# 0.10); 4 body layers (and 3 base layers, build_injective's default), 1e-2, batches of
# 100 and 1 000 epochs brought it to 0.01-0.23 on five of the six (median 0.047) and
# lost on the Mobius strip (0.13 against 0.05). Over all 11 curves and surfaces, 3 seeds
# (benchmarks/results/injective.md) the mean is within 0.02 diameters on 8 of 33 fits.
_INJECTIVE_DEFAULTS = {**_PAPER_DEFAULTS, "n_layers": 4, "learning_rate_init": 1e-2,
                       "batch_size": 100, "max_iter": 1000}
FAMILY_DEFAULTS = {
    "linear": {**_PAPER_DEFAULTS, "n_layers": 0},
    "mlp": _PAPER_DEFAULTS,
    "realnvp": {**_PAPER_DEFAULTS, "n_layers": 6},  # the paper's comparator
    "residual": _PAPER_DEFAULTS,
    "implicit": _PAPER_DEFAULTS,
    "nsf": _ZUKO_DEFAULTS,
    "maf": _ZUKO_DEFAULTS,
    "injective": _INJECTIVE_DEFAULTS,
}
# A Flow instance trains with the paper's settings; a wrapped zuko flow with zuko's.
INSTANCE_DEFAULTS = {"flow": _PAPER_DEFAULTS, "zuko": _ZUKO_DEFAULTS}

AUTO_PARAMETERS = ("n_layers", "max_iter", "batch_size", "learning_rate_init",
                   "learning_rate", "early_stopping", "alpha", "penalty_estimator",
                   "n_iter_no_change")
# Settings of the table with no estimator parameter: the dtype a family trains in on the
# CPU (None: the model's) and the gradient-norm clip (inf: none).
TRAINING_SETTINGS = ("training_dtype", "max_grad_norm")


def resolve_solver(flow, solver):
    """'exact' (the closed form) or 'adam' for the estimator's ``flow`` and ``solver``."""
    is_linear = isinstance(flow, str) and flow == "linear" or (
        isinstance(flow, Flow) and flow.is_linear)
    if solver == "auto":
        return "exact" if is_linear else "adam"
    if solver == "exact" and not is_linear:
        raise ValueError("solver='exact' is only available for flow='linear'; use "
                         "solver='adam' or 'auto'.")
    return solver


def n_validation(validation_fraction, n_samples):
    """Rows held out for early stopping."""
    n_val = max(1, int(round(validation_fraction * n_samples)))
    if n_val >= n_samples:
        raise ValueError("validation_fraction leaves no training samples.")
    return n_val


def resolve_settings(flow, given, n_samples, n_features, solver, validation_fraction):
    """Every parameter of :data:`AUTO_PARAMETERS` for one fit of the estimator's
    ``flow``: the user's value (in ``given``), or the family's default for 'auto' (see
    :data:`FAMILY_DEFAULTS`), for the number of rows the optimizer sees (those left by
    the validation split); the closed form (``solver='exact'``) never holds rows out."""
    if isinstance(flow, str):
        table = FAMILY_DEFAULTS[flow]
    else:
        table = INSTANCE_DEFAULTS["flow" if isinstance(flow, Flow) else "zuko"]
    # The split is decided first: the sizes depend on the rows it leaves.
    early_stopping = (table["early_stopping"] if given["early_stopping"] == "auto"
                      else given["early_stopping"]) and solver != "exact"
    n_train = n_samples - n_validation(validation_fraction, n_samples) if early_stopping \
        else n_samples
    settings = resolve_defaults(table, {**given, "early_stopping": early_stopping},
                                n_train, n_features)
    if solver == "exact" and not isinstance(settings["alpha"], Real):
        settings["alpha"] = FAMILY_DEFAULTS["linear"]["alpha"]
    return settings


def resolve_defaults(table, given, n_samples, n_features):
    """The values of ``AUTO_PARAMETERS`` (and of the internal ``TRAINING_SETTINGS``) for
    one fit.

    Parameters
    ----------
    table : dict
        A row of :data:`FAMILY_DEFAULTS` (or :data:`INSTANCE_DEFAULTS`).
    given : dict
        The estimator's values of :data:`AUTO_PARAMETERS`; 'auto' takes the table's.
    n_samples, n_features : int
        Shape of the training set (after any validation split: the batch size and the
        number of epochs depend on it).

    Returns
    -------
    dict
        Every parameter resolved; ``alpha`` is a float, or ``("validation", grid)`` for
        a choice by held-out likelihood among ``grid`` times the mean feature variance.

    Examples
    --------
    >>> from flowpca.flows._families import FAMILY_DEFAULTS, resolve_defaults
    >>> given = dict.fromkeys(["n_layers", "max_iter", "batch_size", "learning_rate_init",
    ...                        "learning_rate", "early_stopping", "alpha",
    ...                        "penalty_estimator", "n_iter_no_change"], "auto")
    >>> resolved = resolve_defaults(FAMILY_DEFAULTS["nsf"], given, 1800, 2)
    >>> resolved["n_layers"], resolved["batch_size"], resolved["max_iter"]
    (3, 450, 250)
    >>> resolve_defaults(FAMILY_DEFAULTS["mlp"], given, 1800, 2)["n_layers"]
    8
    """
    resolved = {}
    for name in AUTO_PARAMETERS + TRAINING_SETTINGS:
        value = given.get(name, "auto")
        if isinstance(value, str) and value == "auto":
            value = table[name]
            if callable(value):
                value = value(n_samples, n_features)
        resolved[name] = value
    return resolved


def family_names():
    """The names ``flow=`` accepts, in a stable order."""
    return tuple(_FAMILIES)


def family_modules():
    """Module names of the registered families (for loading stored flows)."""
    return tuple(f"flowpca.flows.{spec.split(':')[0]}" for spec in _FAMILIES.values())


def build_flow(name, X, settings):
    """Build the flow family ``name`` for the centered training data ``X``.

    Parameters
    ----------
    name : str
        One of :func:`family_names`.
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data on the flow's device, in its dtype.
    settings : FlowSettings

    Returns
    -------
    flow : Flow

    Examples
    --------
    Every family is built the same way; each builder (e.g.
    :func:`flowpca.flows.coupling.build_realnvp`) lists the ``flow_params`` it accepts:

    >>> import torch
    >>> from flowpca.flows import FlowSettings
    >>> from flowpca.flows._families import build_flow
    >>> X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> X = X - X.mean(dim=0)
    >>> settings = FlowSettings(alpha=1e-3, n_layers=2, flow_params={"hidden_features": (8,)},
    ...                         generator=torch.Generator().manual_seed(0))
    >>> for name in ("realnvp", "residual", "implicit", "nsf", "maf"):
    ...     flow = build_flow(name, X, settings)
    ...     y, log_abs_det = flow(X)
    ...     assert (flow.inverse(y) - X).abs().max() < 1e-8, name
    >>> injective = build_flow("injective", X, FlowSettings(
    ...     alpha=1e-3, n_layers=2, n_components=2, generator=torch.Generator().manual_seed(0)))
    >>> injective.project(X).shape
    torch.Size([20, 2])
    """
    module_name, builder_name = _FAMILIES[name].split(":")
    module = importlib.import_module(f".{module_name}", __package__)
    return getattr(module, builder_name)(X, settings)


def build_mlp(X, settings):
    """``flow='mlp'``: :meth:`MLPFlow.from_data` with ``n_layers`` and ``activation``.

    ``flow_params`` may set ``noise_scale`` (0.01) and ``hidden_scale`` (1.0) of the
    initialization (see :meth:`MLPFlow.from_data`), and ``lipschitz`` (None): a float
    ``L > 1`` builds a :class:`~flowpca.flows.BiLipschitzMLPFlow`, every layer's singular
    values in ``[1/L, L]``, which keeps ``alpha=0`` fits finite.
    """
    params = settings.params("mlp", {"noise_scale": 0.01, "hidden_scale": 1.0,
                                     "lipschitz": None})
    lipschitz = params.pop("lipschitz")
    if lipschitz is not None:
        return BiLipschitzMLPFlow.from_data(
            X, settings.alpha, n_layers=settings.n_layers, activation=settings.activation,
            generator=settings.generator, lipschitz=lipschitz, **params)
    return MLPFlow.from_data(X, settings.alpha, n_layers=settings.n_layers,
                             activation=settings.activation, generator=settings.generator,
                             **params)
