"""The command line's arguments and help texts."""

import argparse

from .._version import __version__
from ..flows._families import family_names
from . import commands, demo

_DESCRIPTION = """\
Nonlinear PCA with a density model: fit NormalizingFlowPCA on a data file, then
transform, score, sample and invert with the saved model.

Data files: .csv (comma-separated numbers; a first line without numbers is a header),
.npy, or .npz (the array 'X', or the only array; --key picks another). Output files:
.csv (with a header line), .npy or .npz (array 'X'); without --out, CSV on standard
output.
"""

_EPILOG = """\
examples:
  flowpca demo --quick
  flowpca fit data.csv --n-components 2 --alpha 1e-4 --out model.joblib
  flowpca transform --model model.joblib data.csv --out components.csv
  flowpca inverse --model model.joblib components.csv --out reconstructed.csv
  flowpca score --model model.joblib test.csv --out log_likelihood.csv
  flowpca sample --model model.joblib --n-samples 100 --out samples.npy

exit status: 0 on success, 1 for a bad file, data or parameter value (one line on
standard error), 2 for a malformed command line, 130 when interrupted.
"""


def _n_components(text):
    """An int, or a float (a fraction of the variance); the estimator checks ranges."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer or a "
                                     "fraction in (0, 1)")


def _add_progress(parser):
    parser.add_argument("-v", "--verbose", action="store_const", const=1, default=None,
                        help="print the loss after every training epoch")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar while training (needs tqdm: pip install "
                             '"flowpca[progress]"); default: when standard error is a '
                             "terminal")


def _add_data(parser, what="data file (.csv, .npy or .npz)"):
    parser.add_argument("data", metavar="DATA", help=what)
    parser.add_argument("--key", help="name of the array in an .npz file (default: 'X', "
                                      "or its only array)")


def _add_model(parser):
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="model file written by 'flowpca fit' (.joblib: load only "
                             "files you trust; .skops: safe to share)")


def _add_out(parser, what):
    parser.add_argument("--out", metavar="FILE", help=f"{what} (.csv, .npy or .npz); "
                                                      "default: CSV on standard output")


def build_parser():
    """The ``flowpca`` argument parser; each subcommand stores its function as ``run``.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="flowpca", description=_DESCRIPTION,
                                     epilog=_EPILOG, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"flowpca {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = subcommands.add_parser(
        "demo",
        help="compare NormalizingFlowPCA with PCA and Isomap on built-in data; write a "
             "figure",
        description="Fit PCA, Isomap and NormalizingFlowPCA (two components each) on one "
                    "of the paper's data sets with known latent factors, print how well "
                    "each recovers them and each held-out log-likelihood, and write a "
                    f"figure ({demo.FIGURE_NAME}).")
    sub.add_argument("--out", default=".", metavar="DIR",
                     help="directory of the figure, created if missing (default: .)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the data and the flow "
                                                         "(default: 0)")
    sub.add_argument("--quick", action="store_true",
                     help="fewer points and epochs: seconds instead of tens of seconds")
    sub.add_argument("--dataset", choices=sorted(demo.DATASETS), default="sine-wave",
                     help="data set (default: sine-wave)")
    _add_progress(sub)
    sub.set_defaults(run=commands.demo)

    sub = subcommands.add_parser(
        "fit", help="fit a model on a data file and save it",
        description="Fit NormalizingFlowPCA on the rows of a data file and save it. Options "
                    "left out take the estimator's defaults; for other parameters, fit in "
                    "Python.")
    _add_data(sub, "training data (.csv, .npy or .npz)")
    sub.add_argument("--n-components", type=_n_components, metavar="K",
                     help="components kept by transform: an integer, or a fraction of "
                          "the variance in (0, 1) (default: all)")
    sub.add_argument("--alpha", type=float, metavar="A",
                     help="Jacobian penalty, a floor on local variances (default: auto, "
                          "chosen for the flow family)")
    sub.add_argument("--flow", metavar="NAME",
                     help=f"flow family: {', '.join(family_names())} (default: nsf)")
    sub.add_argument("--max-iter", type=int, metavar="N", help="epochs at most (default: "
                                                               "auto, for the family)")
    sub.add_argument("--random-state", type=int, metavar="S", help="seed (default: none)")
    sub.add_argument("--device", help="'cpu', 'cuda', ... (default: auto)")
    sub.add_argument("--out", required=True, metavar="MODEL",
                     help="model file: .skops (needs skops: pip install "
                          '"flowpca[persist]") or any other name for joblib')
    _add_progress(sub)
    sub.set_defaults(run=commands.fit)

    sub = subcommands.add_parser(
        "transform", help="components of each row of a data file",
        description="Write the n_components_ local principal components of each row.")
    _add_model(sub)
    _add_data(sub)
    _add_out(sub, "components")
    sub.set_defaults(run=commands.transform)

    sub = subcommands.add_parser(
        "inverse", help="map components back to data space",
        description="Write the data-space point of each row of components (as written by "
                    "'flowpca transform'; missing trailing components count as zero).")
    _add_model(sub)
    _add_data(sub, "components (.csv, .npy or .npz), n_components_ columns")
    _add_out(sub, "points")
    sub.set_defaults(run=commands.inverse)

    sub = subcommands.add_parser(
        "score", help="log-likelihood of each row of a data file",
        description="Print the mean log-likelihood (nats per sample) of the rows of a data "
                    "file; with --out, also write each row's.")
    _add_model(sub)
    _add_data(sub)
    sub.add_argument("--out", metavar="FILE",
                     help="write per-sample log-likelihoods (.csv, .npy or .npz)")
    sub.set_defaults(run=commands.score)

    sub = subcommands.add_parser(
        "sample", help="draw samples from a fitted model",
        description="Draw samples from the fitted density.")
    _add_model(sub)
    sub.add_argument("--n-samples", type=int, required=True, metavar="N",
                     help="number of samples")
    sub.add_argument("--random-state", type=int, metavar="S",
                     help="seed of the draws (default: the model's random_state)")
    _add_out(sub, "samples")
    sub.set_defaults(run=commands.sample)
    return parser
