"""Bi-Lipschitz invertible MLP: every weight matrix has its singular values in ``[1/L, L]``.

Each ``W_l = P_l exp(A_l - A_l^T) diag(s_l) exp(B_l - B_l^T) Q_l`` with ``P_l, Q_l`` fixed
orthogonal matrices (the initialization's singular vectors), trainable ``A_l, B_l`` (so
the exponentials of the skew-symmetric parts are orthogonal) and
``s_l = L ** tanh(theta_l)``: the singular values of ``W_l`` are the ``s_l``, inside
``(1/L, L)`` by construction, for any value of the parameters. A smooth
parametrization, so plain Adam trains it (no projection step), and the bound holds
during training, not only after it.

Why: the likelihood optimum of a flow is bounded by the spectrum of the data's
covariance, and on data with a lower intrinsic dimension and no floor (``alpha = 0``)
it is unbounded: the flow's Jacobian grows without limit across the data. Bounding
every layer and its inverse keeps the Jacobian (and its inverse, up to the activation's
slopes) bounded, so training stays finite (the paper's Appendix A ``alpha = 0`` cases).
"""

import math
from numbers import Real

import torch
from torch import nn

from .mlp import MLPFlow


def _check_lipschitz(lipschitz):
    if isinstance(lipschitz, bool) or not isinstance(lipschitz, Real) or not (
            math.isfinite(lipschitz) and lipschitz > 1):
        raise ValueError(f"lipschitz must be a finite float > 1 (a bound on every layer's "
                         f"singular values, in [1/lipschitz, lipschitz]) or None, got "
                         f"{lipschitz!r}.")
    return float(lipschitz)


def _skew(A):
    return A - A.transpose(-1, -2)


class BiLipschitzMLPFlow(MLPFlow):
    """:class:`MLPFlow` whose weight matrices have singular values in ``[1/L, L]``.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    n_layers : int, default=8
        Number of hidden (affine + nonlinearity) blocks.
    activation : {'asinh', 'leaky_softplus'}, default='asinh'
        The nonlinearity (see :class:`MLPFlow`).
    lipschitz : float, default=2.0
        The bound ``L > 1``: every ``W_l`` has singular values in ``[1/L, L]``.

    Attributes
    ----------
    weights : tuple of torch.Tensor
        The ``n_layers + 1`` matrices ``W_l``, computed from the parametrization at each
        access (read-only; train the parameters below).
    left_skew, right_skew : torch.nn.Parameter of shape (n_layers + 1, D, D)
        ``A_l`` and ``B_l``; only their skew-symmetric parts matter.
    log_scale_logits : torch.nn.Parameter of shape (n_layers + 1, D)
        ``theta_l``, with ``log s_l = log(L) tanh(theta_l)``.

    Notes
    -----
    The trade-off: with ``n_layers + 1`` weight matrices the flow can stretch or shrink
    space by at most ``L ** (n_layers + 1)`` (times the activation's slopes, at most 1),
    so it cannot whiten data whose scales fall outside that range, and it fits heavy
    tails or very thin manifolds less sharply than the unconstrained flow: a larger ``L``
    is more expressive and less stable. The constraint also costs two matrix
    exponentials per layer at each pass (fine for small ``D``; slow for large ``D``).
    The activation ``asinh`` has slopes that vanish far out, so only its affine layers,
    not the whole inverse, are bi-Lipschitz there; 'leaky_softplus' (slopes in
    ``(0.1, 1)``) makes the whole flow bi-Lipschitz.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import BiLipschitzMLPFlow
    >>> X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = BiLipschitzMLPFlow.from_data(X, alpha=1e-3, n_layers=2, lipschitz=2.0,
    ...                                     generator=torch.Generator().manual_seed(0))
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([20, 3]), torch.Size([20]))
    >>> torch.allclose(flow.inverse(y), X)
    True
    >>> s = flow.singular_values()
    >>> bool((s >= 0.5).all() and (s <= 2.0).all())
    True
    """

    def __init__(self, n_features, n_layers=8, activation="asinh", lipschitz=2.0):
        super().__init__(n_features, n_layers=n_layers, activation=activation)
        self.lipschitz = _check_lipschitz(lipschitz)
        del self._modules["weights"]  # replaced by the constrained parametrization below
        n_matrices, D = self.n_layers + 1, self.n_features
        eye = torch.eye(D, dtype=torch.float64).expand(n_matrices, D, D).clone()
        self.left_skew = nn.Parameter(torch.zeros(n_matrices, D, D, dtype=torch.float64))
        self.right_skew = nn.Parameter(torch.zeros(n_matrices, D, D, dtype=torch.float64))
        self.log_scale_logits = nn.Parameter(torch.zeros(n_matrices, D, dtype=torch.float64))
        self.register_buffer("left_basis", eye)
        self.register_buffer("right_basis", eye.clone())

    def get_config(self):
        return {**super().get_config(), "lipschitz": self.lipschitz}

    def singular_values(self):
        """The singular values ``s_l`` of every ``W_l``, shape ``(n_layers + 1, D)``.

        Returns
        -------
        torch.Tensor of shape (n_layers + 1, D)
            ``s_l = L ** tanh(theta_l)``, inside ``(1/L, L)``.

        Examples
        --------
        They are the singular values of :attr:`weights`, inside ``(1/L, L)`` whatever the
        parameters:

        >>> import torch
        >>> from flowpca.flows import BiLipschitzMLPFlow
        >>> flow = BiLipschitzMLPFlow(3, n_layers=1, lipschitz=2.0)
        >>> with torch.no_grad():
        ...     _ = flow.log_scale_logits.copy_(torch.tensor([[-5.0, 0.0, 5.0]] * 2))
        >>> s = flow.singular_values()
        >>> s.shape
        torch.Size([2, 3])
        >>> bool((s >= 0.5).all() and (s <= 2.0).all())
        True
        >>> svdvals = torch.linalg.svdvals(torch.stack(flow.weights))
        >>> torch.allclose(svdvals, s.sort(dim=-1, descending=True).values)
        True
        """
        return torch.exp(math.log(self.lipschitz) * torch.tanh(self.log_scale_logits))

    @property
    def weights(self):
        """The layers' weight matrices ``U_l diag(s_l) V_l^T``, a tuple of ``(D, D)``
        tensors (read-only: built from the constrained parameters)."""
        left = self.left_basis @ torch.linalg.matrix_exp(_skew(self.left_skew))
        right = torch.linalg.matrix_exp(_skew(self.right_skew)) @ self.right_basis
        return tuple((left * self.singular_values().unsqueeze(-2)) @ right)

    @classmethod
    def from_data(cls, X, alpha, n_layers=8, activation="asinh", generator=None,
                  noise_scale=0.01, hidden_scale=0.5, lipschitz=2.0):
        """:meth:`MLPFlow.from_data`'s initialization, each ``W_l`` projected on the
        constraint (its singular values clipped to ``[1/L, L]``).

        With ``alpha=0`` the unconstrained initialization is computed with the floor
        ``1e-6`` times the mean feature variance, so that a singular covariance gives
        finite (then clipped) weights.

        Parameters
        ----------
        X, alpha, n_layers, activation, generator, noise_scale, hidden_scale
            As in :meth:`MLPFlow.from_data`.
        lipschitz : float, default=2.0
            The bound ``L``.

        Returns
        -------
        flow : BiLipschitzMLPFlow

        Examples
        --------
        The whitening of data with scales from 0.01 to 100 would need singular values up to
        100; here they are clipped to ``[1/L, L]``:

        >>> import torch
        >>> from flowpca.flows import BiLipschitzMLPFlow
        >>> X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0),
        ...                 dtype=torch.float64) * torch.tensor([100.0, 1.0, 0.01],
        ...                                                     dtype=torch.float64)
        >>> flow = BiLipschitzMLPFlow.from_data(X, alpha=0.0, n_layers=1, lipschitz=2.0)
        >>> svdvals = torch.linalg.svdvals(torch.stack(flow.weights))
        >>> bool((svdvals >= 0.5 - 1e-9).all() and (svdvals <= 2.0 + 1e-9).all())
        True
        >>> y, _ = flow(X)
        >>> bool((flow.inverse(y) - X).abs().max() < 1e-8)
        True
        """
        lipschitz = _check_lipschitz(lipschitz)
        floor = alpha
        if floor == 0:
            variance = float(X.var(dim=0, unbiased=False).mean()) if X.shape[0] > 1 else 0.0
            floor = 1e-6 * variance or torch.finfo(X.dtype).eps
        plain = MLPFlow.from_data(X, floor, n_layers=n_layers, activation=activation,
                                  generator=generator, noise_scale=noise_scale,
                                  hidden_scale=hidden_scale)
        flow = cls(X.shape[1], n_layers=n_layers, activation=activation,
                   lipschitz=lipschitz).to(device=X.device, dtype=X.dtype)
        with torch.no_grad():
            U, s, Vh = torch.linalg.svd(torch.stack(tuple(plain.weights)))
            bound = math.log(lipschitz)
            ratio = (s.log() / bound).clamp(-1 + 1e-6, 1 - 1e-6)
            flow.log_scale_logits.copy_(torch.atanh(ratio))
            flow.left_basis.copy_(U)
            flow.right_basis.copy_(Vh)
            for target, source in zip(flow.biases, plain.biases):
                target.copy_(source)
        return flow
