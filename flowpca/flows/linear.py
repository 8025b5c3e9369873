"""The linear flow ``f(x) = W x``: at its optimum, exactly PCA."""

import torch
from torch import nn

from .. import _linalg
from ._base import Flow, data_scale


class LinearFlow(Flow):
    """Linear flow ``y = W x`` with a full square weight matrix.

    With ``W^T W = (Sigma + alpha I)^{-1}`` it is the maximum-likelihood Gaussian with
    covariance ``Sigma + alpha I``, whose components are PCA's.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    weight : torch.Tensor of shape (D, D), optional
        Initial ``W``; the identity by default.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import LinearFlow
    >>> flow = LinearFlow(2, torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64))
    >>> y, log_abs_det = flow(torch.ones(1, 2, dtype=torch.float64))
    >>> y.tolist(), log_abs_det.tolist()  # y = W x and log|det W| = log(2 * 0.5)
    ([[2.0, 0.5]], [0.0])
    """

    is_linear = True

    def __init__(self, n_features, weight=None):
        super().__init__(n_features)
        if weight is None:
            weight = torch.eye(self.n_features, dtype=torch.float64)
        self.weight = nn.Parameter(
            torch.as_tensor(weight).clone(memory_format=torch.contiguous_format))

    def forward(self, x):
        log_abs_det = _linalg.slogdet(self.weight)[1]
        return x @ self.weight.T, log_abs_det.expand(x.shape[0])

    def inverse(self, y):
        return _linalg.solve(self.weight, y.T).T

    def jvp(self, x, v):
        return x @ self.weight.T, v @ self.weight.T

    def jacobian(self, x):
        return self.weight.expand(x.shape[0], -1, -1)

    def inverse_jvp(self, x, v):
        return self.inverse(v)

    def frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        # Constant Jacobian: the exact norm is free, whatever the method asked for.
        return self.weight.pow(2).sum().expand(x.shape[0])


def build_linear(X, settings):
    """``flow='linear'``: a random rotation scaled to the data (the paper's start)."""
    if settings.flow_params:
        settings.params("linear", {})
    n_features = X.shape[1]
    gaussian = torch.randn(n_features, n_features, generator=settings.generator,
                           device=X.device, dtype=X.dtype)
    rotation, _ = torch.linalg.qr(gaussian)
    return LinearFlow(n_features, rotation * data_scale(X, settings.alpha)).to(X.device, X.dtype)
