"""The subcommands: ``demo``, ``fit`` (a model from a data file) and ``transform``,
``score``, ``sample``, ``inverse`` (with a saved model). Each takes the parsed arguments
and returns the exit status."""

import time

import numpy as np

from .._estimator import NormalizingFlowPCA
from .demo import run_demo
from .io import (DATA_SUFFIXES, check_model_output, check_output, load_model, read_array,
                 save_model, write_array)

# Command-line options passed to the estimator when given (the estimator's defaults
# apply otherwise, and it validates the values).
FIT_PARAMETERS = ("n_components", "flow", "alpha", "max_iter", "random_state", "device",
                  "verbose")


def demo(args):
    """``flowpca demo``: the comparison table and figure on built-in data."""
    run_demo(args.out, seed=args.seed, quick=args.quick, dataset=args.dataset,
             verbose=args.verbose or 0)
    return 0


def fit(args):
    """``flowpca fit``: fit a model on a data file and save it."""
    check_model_output(args.out)
    X = read_array(args.data, args.key)
    params = {name: getattr(args, name) for name in FIT_PARAMETERS
              if getattr(args, name) is not None}
    model = NormalizingFlowPCA(**params)
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    save_model(model, args.out)
    epochs = f", {model.n_iter_} epochs" if hasattr(model, "loss_curve_") else ""
    variances = " ".join(f"{v:.4g}" for v in model.explained_variance_)
    print(f"Fitted {' '.join(repr(model).split())} on {X.shape[0]} samples x "
          f"{X.shape[1]} features in {seconds:.1f} s{epochs}.")
    print(f"{model.n_components_} components, variances: {variances}")
    print(f"Saved the model to {args.out}")
    return 0


def transform(args):
    """``flowpca transform``: write the components of each row of a data file."""
    check_output(args.out, DATA_SUFFIXES)
    model = load_model(args.model)
    X = read_array(args.data, args.key)
    write_array(args.out, model.transform(X), model.get_feature_names_out())
    return 0


def inverse(args):
    """``flowpca inverse``: map component values back to data space."""
    check_output(args.out, DATA_SUFFIXES)
    model = load_model(args.model)
    Y = read_array(args.data, args.key)
    write_array(args.out, model.inverse_transform(Y), _data_columns(model))
    return 0


def score(args):
    """``flowpca score``: print the mean log-likelihood of a data file's rows (and
    optionally write each row's)."""
    check_output(args.out, DATA_SUFFIXES)
    model = load_model(args.model)
    X = read_array(args.data, args.key)
    log_likelihood = model.score_samples(X)
    print(f"mean log-likelihood: {np.mean(log_likelihood):.6f} nats per sample "
          f"({X.shape[0]} samples)")
    if args.out is not None:
        write_array(args.out, log_likelihood[:, None], ["log_likelihood"])
    return 0


def sample(args):
    """``flowpca sample``: draw samples from the fitted density."""
    check_output(args.out, DATA_SUFFIXES)
    model = load_model(args.model)
    X = model.sample(args.n_samples, random_state=args.random_state)
    write_array(args.out, X, _data_columns(model))
    return 0


def _data_columns(model):
    """Names of the data's columns: those seen in fit, else ``x0, x1, ...``."""
    if hasattr(model, "feature_names_in_"):
        return list(model.feature_names_in_)
    return [f"x{i}" for i in range(model.n_features_in_)]
