"""The Flow contract: what the estimator needs from a normalizing flow.

A flow is a bijection ``f: R^D -> R^D`` that maps (centered) data to a standard normal.
Subclasses implement :meth:`Flow.forward` and :meth:`Flow.inverse`; the Jacobian methods
have generic :mod:`torch.func` fallbacks that families with structure override for speed.
"""

import abc
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import _linalg


class Flow(nn.Module, abc.ABC):
    """Base class of flowpca's normalizing flows.

    Parameters
    ----------
    n_features : int
        Dimension ``D`` of the space the flow acts on.

    Notes
    -----
    The contract, all on batches of shape ``(n, D)``:

    - ``forward(x) -> (y, log_abs_det)``: ``y = f(x)`` and ``log|det J_f(x)|`` per row.
    - ``inverse(y) -> x``: ``f^{-1}(y)``.
    - ``jvp(x, v) -> (y, J_f(x) v)``.
    - ``jacobian(x) -> J``: shape ``(n, D, D)``, ``J[i] = J_f(x[i])``.
    - ``inverse_jvp(x, v) -> J_f(x)^{-1} v``.
    - ``frobenius_sq(x, ...) -> ||J_f(x)||_F^2`` per row, exact or estimated.
    - ``get_config() -> dict``: constructor arguments, so that ``type(flow)(**config)``
      followed by ``load_state_dict`` rebuilds the flow (used for persistence).
    - ``finalize_training()``: called once after training (optional; no-op by default).

    Examples
    --------
    A new family implements ``forward`` and ``inverse``; the Jacobian methods fall back
    on :mod:`torch.func`. Here an elementwise scaling ``y = exp(s) * x``:

    >>> import numpy as np
    >>> import torch
    >>> from flowpca import NormalizingFlowPCA
    >>> from flowpca.flows import Flow
    >>> class ScaleFlow(Flow):
    ...     def __init__(self, n_features):
    ...         super().__init__(n_features)
    ...         self.log_scale = torch.nn.Parameter(
    ...             torch.zeros(n_features, dtype=torch.float64))
    ...
    ...     def forward(self, x):
    ...         log_abs_det = self.log_scale.sum().expand(x.shape[0])
    ...         return x * self.log_scale.exp(), log_abs_det
    ...
    ...     def inverse(self, y):
    ...         return y * (-self.log_scale).exp()
    >>> flow = ScaleFlow(2)
    >>> x = torch.ones(3, 2, dtype=torch.float64)
    >>> y, log_abs_det = flow(x)
    >>> flow.jacobian(x).shape
    torch.Size([3, 2, 2])
    >>> torch.allclose(flow.inverse(y), x)
    True

    Any flow instance can be fitted by the estimator (it is copied, not modified):

    >>> X = np.random.RandomState(0).normal(size=(100, 2)) * [2.0, 0.5]
    >>> model = NormalizingFlowPCA(flow=ScaleFlow(2), max_iter=5, random_state=0).fit(X)
    >>> model.transform(X).shape
    (100, 2)
    """

    #: Whether the Jacobian is the same at every point (the linear flow).
    is_linear = False
    #: Whether the flow maps a lower-dimensional latent onto a manifold (no square
    #: Jacobian; the estimator's components are its latent coordinates).
    is_injective = False
    #: The estimator's ``component_map='auto'`` for this flow (see
    #: :func:`flowpca.components.make_component_map`).
    default_component_map = "projected"
    #: Constructor arguments renamed since flowpca 0.1 (old name -> new), so that stored
    #: configurations load (see :mod:`flowpca._persistence`).
    renamed_parameters = {}

    def __init__(self, n_features):
        super().__init__()
        self.n_features = int(n_features)

    @abc.abstractmethod
    def forward(self, x):
        """Map data to the latent space.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)

        Returns
        -------
        y : torch.Tensor of shape (n, D)
        log_abs_det : torch.Tensor of shape (n,)
            ``log|det J_f(x)|`` per row.

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> y, log_abs_det = flow.forward(torch.ones(1, 2, dtype=torch.float64))
        >>> y.tolist(), log_abs_det.tolist()
        ([[2.0, 0.5]], [0.0])
        """

    @abc.abstractmethod
    def inverse(self, y):
        """Map latent points back to data space: ``x = f^{-1}(y)``.

        Parameters
        ----------
        y : torch.Tensor of shape (n, D)

        Returns
        -------
        x : torch.Tensor of shape (n, D)

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> flow.inverse(torch.tensor([[2.0, 0.5]], dtype=torch.float64)).tolist()
        [[1.0, 1.0]]
        """

    def get_config(self):
        """Constructor arguments of this flow.

        Returns
        -------
        config : dict
            Keyword arguments such that ``type(self)(**config)`` followed by
            ``load_state_dict`` rebuilds the flow.

        Examples
        --------
        >>> from flowpca.flows import LinearFlow
        >>> LinearFlow(3).get_config()
        {'n_features': 3}
        """
        return {"n_features": self.n_features}

    def finalize_training(self):
        """Called once after training; no-op by default.

        Families whose training uses approximations that the fitted model must not keep
        (e.g. power-iteration spectral norms) make them exact here.

        Examples
        --------
        >>> from flowpca.flows import LinearFlow
        >>> LinearFlow(2).finalize_training()  # nothing to make exact
        """

    def _map(self, x):
        return self.forward(x)[0]

    def jvp(self, x, v):
        """Jacobian-vector products ``(f(x), J_f(x) v)`` row by row.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        v : torch.Tensor of shape (n, D)

        Returns
        -------
        y : torch.Tensor of shape (n, D)
            ``f(x)``.
        jv : torch.Tensor of shape (n, D)
            ``J_f(x_i) v_i`` per row.

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> x = torch.ones(1, 2, dtype=torch.float64)
        >>> y, jv = flow.jvp(x, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
        >>> jv.tolist()
        [[2.0, 0.0]]
        """
        return torch.func.jvp(self._map, (x,), (v,))

    def jacobian(self, x):
        """Per-row Jacobians.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)

        Returns
        -------
        J : torch.Tensor of shape (n, D, D)
            ``J[i] = J_f(x[i])``.

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> flow.jacobian(torch.zeros(3, 2, dtype=torch.float64))[0].tolist()
        [[2.0, 0.0], [0.0, 0.5]]
        """
        def single(row):
            return self._map(row.unsqueeze(0)).squeeze(0)
        return torch.func.vmap(torch.func.jacrev(single))(x)

    def inverse_jvp(self, x, v):
        """``J_f(x)^{-1} v`` row by row.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        v : torch.Tensor of shape (n, D)

        Returns
        -------
        w : torch.Tensor of shape (n, D)
            ``J_f(x_i)^{-1} v_i`` per row.

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> flow.inverse_jvp(x, torch.ones(1, 2, dtype=torch.float64)).tolist()
        [[0.5, 2.0]]
        """
        return _linalg.solve(self.jacobian(x), v.unsqueeze(-1)).squeeze(-1)

    def inverse_jacobian_operators(self, x):
        """Products with ``J_f(x)^{-1}`` and ``J_f(x)^{-T}`` for many vectors per row.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)

        Returns
        -------
        apply_inverse, apply_inverse_transpose : callable
            Each maps ``V`` of shape ``(n, q, D)`` (rows ``v``) to the rows
            ``J_f(x_i)^{-1} v`` (resp. ``J_f(x_i)^{-T} v``), shape ``(n, q, D)``. Whatever
            they need from ``x`` is computed once, so repeated products are cheap.

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> apply_inverse, _ = flow.inverse_jacobian_operators(
        ...     torch.zeros(1, 2, dtype=torch.float64))
        >>> apply_inverse(torch.ones(1, 1, 2, dtype=torch.float64)).tolist()
        [[[0.5, 2.0]]]
        """
        n, D = x.shape
        y = self._map(x)

        def repeat(tensor, q):
            return tensor.unsqueeze(1).expand(-1, q, -1).reshape(-1, D)

        def apply_inverse(V):
            q = V.shape[1]
            return torch.func.jvp(self.inverse, (repeat(y, q),),
                                  (V.reshape(-1, D),))[1].reshape(n, q, D)

        def apply_inverse_transpose(V):
            q = V.shape[1]
            _, vjp = torch.func.vjp(self.inverse, repeat(y, q))
            return vjp(V.reshape(-1, D))[0].reshape(n, q, D)

        return apply_inverse, apply_inverse_transpose

    def frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        """Squared Frobenius norm of the Jacobian per row.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        method : {'exact', 'hutchinson'}
            'exact' forms the Jacobian; 'hutchinson' returns the unbiased estimate
            ``mean_k ||J eps_k||^2`` with ``eps_k ~ N(0, I)``.
        n_probes : int
            Number of probe vectors for 'hutchinson'.
        generator : torch.Generator, optional
            Source of the probes.

        Returns
        -------
        frobenius_sq : torch.Tensor of shape (n,)
            ``||J_f(x_i)||_F^2`` per row (estimated for 'hutchinson').

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> flow.frobenius_sq(torch.zeros(2, 2, dtype=torch.float64)).tolist()  # 4 + 0.25
        [4.25, 4.25]
        """
        if method == "exact":
            return self.jacobian(x).pow(2).sum(dim=(1, 2))
        total = 0.0
        for _ in range(n_probes):
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            total = total + self.jvp(x, eps)[1].pow(2).sum(dim=1)
        return total / n_probes

    def forward_and_frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        """``forward(x)`` and ``frobenius_sq(x)`` together (families may fuse the passes).

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        method : {'exact', 'hutchinson'}
            As in :meth:`frobenius_sq`.
        n_probes : int
            As in :meth:`frobenius_sq`.
        generator : torch.Generator, optional
            As in :meth:`frobenius_sq`.

        Returns
        -------
        y : torch.Tensor of shape (n, D)
        log_abs_det : torch.Tensor of shape (n,)
        frobenius_sq : torch.Tensor of shape (n,)

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import LinearFlow
        >>> flow = LinearFlow(2, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
        >>> y, log_abs_det, frobenius_sq = flow.forward_and_frobenius_sq(
        ...     torch.ones(1, 2, dtype=torch.float64))
        >>> y.tolist(), log_abs_det.tolist(), frobenius_sq.tolist()
        ([[2.0, 0.5]], [0.0], [4.25])
        """
        y, log_abs_det = self.forward(x)
        return y, log_abs_det, self.frobenius_sq(x, method, n_probes, generator)


class TangentPassFlow(Flow):
    """A flow whose Jacobian products all come from one pass through its layers with
    tangent vectors pushed alongside (the MLP, RealNVP and residual families).

    A family implements the single hook :meth:`_push`; this class turns it into the
    contract's ``jvp``, ``jacobian``, ``frobenius_sq`` and ``forward_and_frobenius_sq``
    (their docstrings are :class:`Flow`'s).
    """

    @abc.abstractmethod
    def _push(self, x, tangents, log_det, generator=None):
        """``(y, log_abs_det, T)``: ``f(x)``, ``log|det J_f(x)|`` per row (or None
        without ``log_det``) and the tangents pushed through, ``T[i, k] = J_f(x[i])
        tangents[i, k]`` of shape ``(n, k, D)``; ``tangents=None`` pushes the identity
        (``T[i] = J_f(x[i])^T``). ``generator`` serves stochastic log-determinants."""

    def jvp(self, x, v):
        y, _, T = self._push(x, v.unsqueeze(1), log_det=False)
        return y, T.squeeze(1)

    def jacobian(self, x):
        return self._push(x, None, log_det=False)[2].transpose(1, 2)

    def frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        return self._frobenius_pass(x, method, n_probes, generator, log_det=False)[2]

    def forward_and_frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        return self._frobenius_pass(x, method, n_probes, generator, log_det=True)

    def _frobenius_pass(self, x, method, n_probes, generator, log_det):
        check_frobenius_method(method)
        if method == "exact":  # the identity pushed through: sum of J's squared entries
            y, log_abs_det, T = self._push(x, None, log_det, generator)
            return y, log_abs_det, T.pow(2).sum(dim=(1, 2))
        if generator is None:
            raise ValueError("method='hutchinson' needs a torch.Generator: flowpca never "
                             "draws from torch's global random number generator.")
        probes = torch.randn((x.shape[0], int(n_probes), x.shape[1]), generator=generator,
                             dtype=x.dtype, device=generator.device).to(x.device)
        y, log_abs_det, T = self._push(x, probes, log_det, generator)
        return y, log_abs_det, T.pow(2).sum(dim=2).mean(dim=1)


def draw_seed(generator):
    """A seed for a flow's private generator, drawn from the estimator's generator.

    Parameters
    ----------
    generator : torch.Generator

    Returns
    -------
    int
        In ``[0, 2**31 - 1)``.
    """
    return int(torch.randint(2**31 - 1, (), generator=generator, device=generator.device))


#: The estimators of ``||J||_F^2`` every family offers (``Flow.frobenius_sq``).
FROBENIUS_METHODS = ("exact", "hutchinson")


def check_frobenius_method(method):
    """A ValueError unless ``method`` is one of :data:`FROBENIUS_METHODS`."""
    if method not in FROBENIUS_METHODS:
        raise ValueError(f"method must be one of {FROBENIUS_METHODS}, got {method!r}.")


def whitening(X, alpha):
    """``diag((lambda + alpha)^-1/2) V^T`` for ``X^T X / n + alpha I = V diag(lambda +
    alpha) V^T``: the linear flow's optimum (``X`` centered), rows in ascending order of
    ``lambda``.

    Eigenvalues below ``alpha`` are rounding (``eigh`` resolves them to about ``eps``
    times the largest), so they are clamped to ``alpha``, and to ``eps`` times the largest
    where ``alpha`` is smaller: data on a subspace with ``alpha=0`` keep a finite (if
    huge) scale rather than an infinite one.

    Parameters
    ----------
    X : torch.Tensor of shape (n, D)
        Centered data.
    alpha : float
        Variance floor.

    Returns
    -------
    torch.Tensor of shape (D, D)
        ``W`` with ``W (X^T X / n + alpha I) W^T = I`` where no eigenvalue is clamped.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows._base import whitening
    >>> X = torch.randn(500, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64)
    >>> X = X - X.mean(dim=0)
    >>> W = whitening(X, alpha=0.0)
    >>> torch.allclose(W @ (X.T @ X / 500) @ W.T, torch.eye(3, dtype=torch.float64))
    True
    """
    variances, vectors = covariance_spectrum(X, alpha)
    return (vectors * variances.rsqrt()).T


def covariance_spectrum(X, alpha):
    """Eigenvalues (ascending) and eigenvectors (columns) of ``X^T X / n + alpha I``,
    the eigenvalues clamped as in :func:`whitening`."""
    n_samples, n_features = X.shape
    X = X.detach()
    eye = torch.eye(n_features, dtype=X.dtype, device=X.device)
    variances, vectors = torch.linalg.eigh(X.T @ X / n_samples + alpha * eye)
    finfo = torch.finfo(X.dtype)
    floor = max(float(alpha), finfo.tiny, float(variances.max()) * finfo.eps)
    return variances.clamp_min(floor), vectors


def data_scale(X, alpha):
    """``1 / sqrt(mean feature variance + alpha)``: a scale that makes ``X`` about unit."""
    variance = float(X.var(dim=0, unbiased=False).mean()) if X.shape[0] > 1 else 0.0
    return 1.0 / math.sqrt(max(variance, torch.finfo(torch.float64).tiny) + alpha)


@dataclass(frozen=True)
class FlowSettings:
    """What the estimator tells a flow family when it builds a flow.

    Attributes
    ----------
    alpha : float
        Penalty weight (variance floor), for initializations that whiten the data.
    n_layers : int
        The family's depth: hidden blocks, coupling layers, residual blocks, transforms.
    activation : str
        Nonlinearity of the 'mlp' flow; other families ignore it.
    flow_params : dict
        Family-specific keyword arguments (``NormalizingFlowPCA(flow_params=...)``).
    generator : torch.Generator
        The only source of randomness of the initialization.
    n_components : int or None
        Latent dimension of the families that have one ('injective'); None for all
        features.
    """

    alpha: float
    n_layers: int
    activation: str = "asinh"
    flow_params: dict = field(default_factory=dict)
    generator: Any = None
    n_components: Any = None

    def params(self, family, defaults):
        """``flow_params`` merged into ``defaults``; unknown keys raise ``ValueError``.

        Parameters
        ----------
        family : str
            The family's name, for the error message.
        defaults : dict
            Every accepted key with its default value.

        Returns
        -------
        params : dict
            The defaults updated with the user's values.
        """
        unknown = sorted(set(self.flow_params) - set(defaults))
        if unknown:
            raise ValueError(
                f"flow_params has keys {unknown} that flow={family!r} does not accept; "
                f"accepted keys are {sorted(defaults)}.")
        return {**defaults, **self.flow_params}


def renamed_parameter(old, new, value):
    """``value``, given under the parameter's name before flowpca 0.2, with a
    :class:`FutureWarning` that names the new one."""
    warnings.warn(f"{old!r} is deprecated and will be removed in flowpca 0.3: use "
                  f"{new!r}, the name every family uses.", FutureWarning, stacklevel=3)
    return value


class RenamedAttribute:
    """A read-only alias, with a :class:`FutureWarning`, of an attribute renamed since
    flowpca 0.1."""

    def __init__(self, old, new):
        self.old, self.new = old, new

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return renamed_parameter(self.old, self.new, getattr(instance, self.new))
