"""The density of a flow: data checks, fitting, scoring and sampling.

- :mod:`._checks`: centering, and whether a model in a dtype can represent the data.
- :mod:`._objective`: the log-likelihood and the penalized training objective.
- :mod:`._training`: mini-batch Adam with early stopping, divergence and interrupt safety.
- :mod:`._fitting`: the linear flow's closed form, building the initial flow, training
  with ``alpha`` chosen on held-out data, the warning for unbounded likelihoods.
- :mod:`._baseline`: the Gaussian baseline every flow is measured against.
- :mod:`._sampling`: scores and samples of a fitted flow.
"""

from ._baseline import GaussianBaseline, gaussian_baseline
from ._checks import center, check_finite_scores, check_nonsingular, check_variance_range
from ._fitting import (exact_linear_solution, fit_linear, make_flow, split_validation,
                       train, warn_if_unbounded)
from ._objective import log_likelihood, penalized_nll
from ._sampling import sample, score_samples
from ._training import TrainingOptions, TrainingResult, train_flow

__all__ = [
    "GaussianBaseline", "TrainingOptions", "TrainingResult", "center",
    "check_finite_scores", "check_nonsingular", "check_variance_range",
    "exact_linear_solution", "fit_linear", "gaussian_baseline", "log_likelihood",
    "make_flow", "penalized_nll", "sample", "score_samples", "split_validation", "train",
    "train_flow", "warn_if_unbounded",
]
