"""The training objective and the log-likelihood of a flow with a standard normal target."""

import math



def log_likelihood(flow, x):
    """Full D-dimensional log-density ``log p(x)`` per row, in nats (x already centered)."""
    y, log_abs_det = flow(x)
    n_features = x.shape[1]
    return -0.5 * y.pow(2).sum(dim=1) - 0.5 * n_features * math.log(2 * math.pi) + log_abs_det


def penalized_nll(flow, x, alpha, penalty="exact", n_probes=1, generator=None):
    """Mean over rows of ``||f(x)||^2 / 2 - log|det J_f(x)| + alpha/2 ||J_f(x)||_F^2``.

    This is the negative log-likelihood up to the constant ``D/2 log 2 pi``, plus the
    Tikhonov penalty of Feinman & Parthasarathy (2020, section 5); their objective is twice
    this one. With the factor 1/2 on the penalty, ``alpha`` has units of variance: the
    linear flow's optimum is ``W^T W = (Sigma + alpha I)^{-1}``.

    Parameters
    ----------
    flow : Flow
    x : torch.Tensor of shape (n, D)
        Centered data.
    alpha : float
        Penalty weight (units of variance: the linear optimum's covariance is
        ``Sigma + alpha I``).
    penalty : {'exact', 'hutchinson'}
        How ``||J||_F^2`` is computed (see :meth:`Flow.frobenius_sq`).
    n_probes : int
        Hutchinson probes.
    generator : torch.Generator, optional
        Source of the probes.
    """
    if alpha > 0:
        y, log_abs_det, frobenius_sq = flow.forward_and_frobenius_sq(
            x, method=penalty, n_probes=n_probes, generator=generator)
        per_row = 0.5 * y.pow(2).sum(dim=1) - log_abs_det + 0.5 * alpha * frobenius_sq
    else:
        y, log_abs_det = flow(x)
        per_row = 0.5 * y.pow(2).sum(dim=1) - log_abs_det
    return per_row.mean()
