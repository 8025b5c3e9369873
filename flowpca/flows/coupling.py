"""RealNVP: affine coupling layers (Dinh, Sohl-Dickstein & Bengio, 2017).

The flow whitens its input with a trainable affine map ``h_0 = W x + b`` and then applies
``n_layers`` affine couplings. Coupling ``k`` splits the features by parity into a
conditioning part ``a`` and a transformed part ``b`` (the roles alternate from one coupling
to the next) and maps

    ``a -> a``,   ``b -> b * exp(s(a)) + t(a)``,

where ``(s, t)`` come from a ReLU MLP (the conditioner) and the log-scales are bounded,
``s = c tanh(s_raw / c)``. Every coupling is triangular, so the inverse is exact and
``log|det J| = log|det W| + sum_k sum_i s_k,i``. Jacobian-vector products push tangents
through the linearized conditioners alongside the point (as for the MLP flow), which gives
:meth:`RealNVPFlow.jvp`, the Jacobian and the penalty's Frobenius norm from one pass.

Batch normalization is left out on purpose: it makes the density of a point depend on the
batch it is scored with.
"""

import math
from numbers import Integral, Real

import torch
from torch import nn

from .. import _linalg
from ._base import RenamedAttribute, TangentPassFlow, renamed_parameter, whitening


#: Defaults of ``flow_params`` for ``flow='realnvp'`` (see :func:`build_realnvp`).
DEFAULT_PARAMS = {"hidden_features": (64, 64), "scale_clamp": 3.0}


def _check_hidden_features(hidden_features):
    if isinstance(hidden_features, (list, tuple)) and all(
            isinstance(width, Integral) and not isinstance(width, bool) and width > 0
            for width in hidden_features):
        return tuple(int(width) for width in hidden_features)
    raise ValueError("hidden_features must be a tuple of positive ints (the widths of the "
                     f"conditioners' hidden layers), got {hidden_features!r}.")


def _check_scale_clamp(scale_clamp):
    if (isinstance(scale_clamp, Real) and not isinstance(scale_clamp, bool)
            and math.isfinite(scale_clamp) and scale_clamp > 0):
        return float(scale_clamp)
    raise ValueError(f"scale_clamp must be a positive finite float, got {scale_clamp!r}.")


class _Conditioner(nn.Module):
    """ReLU MLP ``R^{n_in} -> R^{2 n_out}``: raw log-scales and shifts of a coupling.

    With no inputs (``n_in = 0``) it has no hidden layer: its output is its last bias.
    """

    def __init__(self, n_in, n_out, hidden_features):
        super().__init__()
        widths = (n_in,) + (tuple(hidden_features) if n_in else ()) + (2 * n_out,)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(m, k, dtype=torch.float64))
             for k, m in zip(widths[:-1], widths[1:])])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(m, dtype=torch.float64)) for m in widths[1:]])

    @torch.no_grad()
    def reset_parameters(self, generator):
        """Hidden layers as ``torch.nn.Linear`` initializes them (uniform with bound
        ``1/sqrt(fan_in)``), drawn from ``generator``; the last layer zero, so that the
        coupling starts as the identity."""
        *hidden, (last_weight, last_bias) = zip(self.weights, self.biases)
        for weight, bias in hidden:
            bound = 1.0 / math.sqrt(weight.shape[1])
            for parameter in (weight, bias):
                noise = torch.rand(parameter.shape, generator=generator,
                                   dtype=parameter.dtype, device=generator.device)
                parameter.copy_((2 * noise - 1) * bound)
        last_weight.zero_()
        last_bias.zero_()

    def forward(self, h, tangents=None):
        """Output at ``h`` (n, n_in) and, if given, at the tangent rows (n, k, n_in)."""
        *hidden, (last_weight, last_bias) = zip(self.weights, self.biases)
        for weight, bias in hidden:
            u = torch.addmm(bias, h, weight.T)
            h = torch.relu(u)
            if tangents is not None:
                tangents = (tangents @ weight.T) * (u > 0).unsqueeze(1).to(u.dtype)
        out = torch.addmm(last_bias, h, last_weight.T)
        if tangents is not None:
            tangents = tangents @ last_weight.T
        return out, tangents


class RealNVPFlow(TangentPassFlow):
    """RealNVP flow: a trainable affine whitening, then affine coupling layers.

    ``y = C_K o ... o C_1 (W x + b)`` where coupling ``C_k`` keeps one parity class of the
    features (``a``: even features for even ``k``, odd ones for odd ``k``) and maps the
    other to ``b * exp(s_k(a)) + t_k(a)``; ``(s_k, t_k)`` come from a ReLU MLP with hidden
    widths ``hidden_features``, and ``s_k = c tanh(s_raw / c)`` with ``c = scale_clamp``.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    n_layers : int, default=6
        Number of coupling layers ``K`` (the paper's comparator has 6;
        ``n_couplings`` before flowpca 0.2, deprecated).
    hidden_features : tuple of int, default=(64, 64)
        Widths of each conditioner's hidden ReLU layers. The paper's comparator used
        ``(512, 512)``; see :func:`build_realnvp` for why the default is smaller.
    scale_clamp : float, default=3.0
        Bound ``c`` on each coupling's log-scales: every coupling stretches or shrinks a
        coordinate by at most ``exp(c)``, which keeps training away from overflow.

    Attributes
    ----------
    weight : torch.nn.Parameter of shape (D, D)
        ``W`` of the input layer, identity at construction.
    bias : torch.nn.Parameter of shape (D,)
        ``b`` of the input layer, zero at construction.
    conditioners : torch.nn.ModuleList
        One conditioner per coupling; the last layer of each is zero at construction,
        so every coupling starts as the identity.

    Notes
    -----
    With one feature there is nothing to condition on: each conditioner is then a constant
    (its output bias), every coupling an affine map of the single coordinate, and the flow
    a (Gaussian) affine map. Use ``flow='mlp'`` for nonlinear densities on the line.

    There is no batch normalization (it would make a point's density depend on its batch).
    Parameters are created in float64; hidden layers are drawn from a private generator
    seeded with 0, so construction never touches torch's global random number generator.
    Use :meth:`from_data` for an initialization at the whitening of the data.

    ``log|det J|`` costs one LU factorization of ``W`` per call; :meth:`jvp` costs about
    one extra forward pass, :meth:`jacobian` and the exact Frobenius norm about ``D``.

    References
    ----------
    L. Dinh, J. Sohl-Dickstein and S. Bengio, "Density estimation using Real NVP", ICLR 2017.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import RealNVPFlow
    >>> X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = RealNVPFlow.from_data(X, alpha=1e-3, n_layers=2, hidden_features=(8,),
    ...                              generator=torch.Generator().manual_seed(0))
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([20, 3]), torch.Size([20]))
    >>> torch.allclose(flow.inverse(y), X)
    True
    >>> flow.jacobian(X[:2]).shape
    torch.Size([2, 3, 3])
    """

    renamed_parameters = {"n_couplings": "n_layers"}
    n_couplings = RenamedAttribute("n_couplings", "n_layers")

    def __init__(self, n_features, n_layers=6, hidden_features=(64, 64),
                 scale_clamp=3.0, *, n_couplings=None):
        super().__init__(n_features)
        if n_couplings is not None:
            n_layers = renamed_parameter("n_couplings", "n_layers", n_couplings)
        if not isinstance(n_layers, Integral) or n_layers < 0:
            raise ValueError(f"n_layers must be an int >= 0, got {n_layers!r}.")
        self.n_layers = int(n_layers)
        self.hidden_features = _check_hidden_features(hidden_features)
        self.scale_clamp = _check_scale_clamp(scale_clamp)
        D = self.n_features
        self.weight = nn.Parameter(torch.eye(D, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(D, dtype=torch.float64))
        even, odd = torch.arange(0, D, 2), torch.arange(1, D, 2)
        # (kept, transformed) features of even and odd couplings; in 1-D every coupling
        # transforms the single feature, conditioned on nothing.
        splits = [(odd, even)] * 2 if D == 1 else [(even, odd), (odd, even)]
        for parity, (kept, moved) in enumerate(splits):
            order = torch.cat((kept, moved))
            self.register_buffer(f"_kept{parity}", kept, persistent=False)
            self.register_buffer(f"_moved{parity}", moved, persistent=False)
            self.register_buffer(f"_unsplit{parity}", torch.argsort(order), persistent=False)
        self.conditioners = nn.ModuleList([
            _Conditioner(len(splits[k % 2][0]), len(splits[k % 2][1]), self.hidden_features)
            for k in range(self.n_layers)])
        self.reset_parameters(torch.Generator().manual_seed(0))

    def get_config(self):
        return {"n_features": self.n_features, "n_layers": self.n_layers,
                "hidden_features": self.hidden_features, "scale_clamp": self.scale_clamp}

    @torch.no_grad()
    def reset_parameters(self, generator):
        """Identity input layer and identity couplings, hidden layers drawn from
        ``generator``.

        Parameters
        ----------
        generator : torch.Generator
            Source of the conditioners' hidden weights (on the flow's device).

        Returns
        -------
        None
            The parameters are set in place.

        Examples
        --------
        The flow is the identity afterwards, whatever its parameters were:

        >>> import torch
        >>> from flowpca.flows import RealNVPFlow
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> flow = RealNVPFlow.from_data(x, alpha=1e-3, n_layers=2, hidden_features=(8,))
        >>> flow.reset_parameters(torch.Generator().manual_seed(1))
        >>> y, log_abs_det = flow(x)
        >>> torch.equal(y, x), log_abs_det.tolist()
        (True, [0.0, 0.0, 0.0, 0.0])
        """
        self.weight.copy_(torch.eye(self.n_features, dtype=self.weight.dtype))
        self.bias.zero_()
        for conditioner in self.conditioners:
            conditioner.reset_parameters(generator)

    @classmethod
    def from_data(cls, X, alpha, n_layers=6, hidden_features=(64, 64),
                  scale_clamp=3.0, generator=None, *, n_couplings=None):
        """Build a flow that starts at the whitening of ``X``: the linear flow's optimum.

        The input layer is ``W = diag((lambda + alpha)^{-1/2}) V^T`` from the
        eigendecomposition ``Sigma_hat + alpha I = V diag(lambda + alpha) V^T``,
        ``Sigma_hat = X^T X / n``, with the principal axes in decreasing variance, and
        ``b = 0`` (``X`` is centered). Every coupling starts as the identity (zero last
        conditioner layer), so the initial model is the Gaussian ``N(0, Sigma_hat +
        alpha I)`` and training starts from that solution.

        Parameters
        ----------
        X : torch.Tensor of shape (n, D)
            Centered data; its dtype and device are the flow's.
        alpha : float
            Penalty weight (variance floor) of the whitening.
        n_layers, hidden_features, scale_clamp
            As in the constructor.
        generator : torch.Generator, optional
            Source of the conditioners' hidden weights; a generator seeded with 0 if
            omitted.

        Returns
        -------
        flow : RealNVPFlow

        Examples
        --------
        The initial output is white on ``X`` (with ``alpha=0``: covariance exactly ``I``):

        >>> import torch
        >>> from flowpca.flows import RealNVPFlow
        >>> X = torch.randn(100, 3, generator=torch.Generator().manual_seed(0),
        ...                 dtype=torch.float64)
        >>> X = X * torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64)
        >>> X = X - X.mean(dim=0)
        >>> flow = RealNVPFlow.from_data(X, alpha=0.0, n_layers=2, hidden_features=(8,))
        >>> y, _ = flow(X)
        >>> torch.allclose(y.T @ y / len(X), torch.eye(3, dtype=torch.float64))
        True
        """
        n_features = X.shape[1]
        if n_couplings is not None:
            n_layers = renamed_parameter("n_couplings", "n_layers", n_couplings)
        flow = cls(n_features, n_layers, hidden_features, scale_clamp).to(
            device=X.device, dtype=X.dtype)
        if generator is None:
            generator = torch.Generator(device=X.device).manual_seed(0)
        flow.reset_parameters(generator)
        with torch.no_grad():
            flow.weight.copy_(whitening(X, alpha).flip(0))  # largest variance first
        return flow

    def _split(self, coupling):
        parity = coupling % 2
        return (getattr(self, f"_kept{parity}"), getattr(self, f"_moved{parity}"),
                getattr(self, f"_unsplit{parity}"))

    def _log_scale(self, raw):
        """Bounded log-scales ``c tanh(raw / c)`` and their derivative in ``raw``."""
        bounded = torch.tanh(raw / self.scale_clamp)
        return self.scale_clamp * bounded, 1 - bounded * bounded

    def _pass(self, x, tangents=None, identity=False, log_det=True):
        """One pass through the layers, pushing tangent rows alongside ``x``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        tangents : torch.Tensor of shape (n, k, D), optional
            Rows ``v`` pushed to ``J_f(x) v``.
        identity : bool
            Push the identity rows (``k = D``): the result is ``J_f(x)^T`` per row.
        log_det : bool
            Whether to compute ``log|det J_f(x)|``.

        Returns
        -------
        y, log_abs_det (or None), tangents (or None)
        """
        h = torch.addmm(self.bias, x, self.weight.T)
        z = tangents
        if identity:
            z = self.weight.T.unsqueeze(0).expand(x.shape[0], -1, -1)
        elif z is not None:
            z = z @ self.weight.T
        log_scales = torch.zeros_like(h[:, 0]) if log_det else None
        for coupling, conditioner in enumerate(self.conditioners):
            kept, moved, unsplit = self._split(coupling)
            a, b = h.index_select(1, kept), h.index_select(1, moved)
            z_a = None if z is None else z.index_select(2, kept)
            out, out_z = conditioner(a, z_a)
            n_moved = b.shape[1]
            s, slope = self._log_scale(out[:, :n_moved])
            scale = torch.exp(s)
            stretched = b * scale
            if z is not None:
                # d(b e^s + t) = e^s db + b e^s ds + dt, with ds = slope * d(s_raw).
                z_b = (z.index_select(2, moved) * scale.unsqueeze(1)
                       + (stretched * slope).unsqueeze(1) * out_z[..., :n_moved]
                       + out_z[..., n_moved:])
                z = torch.cat((z_a, z_b), dim=2).index_select(2, unsplit)
            h = torch.cat((a, stretched + out[:, n_moved:]), dim=1).index_select(1, unsplit)
            if log_det:
                log_scales = log_scales + s.sum(dim=1)
        log_abs_det = None
        if log_det:
            log_abs_det = log_scales + _linalg.slogdet(self.weight)[1]
        return h, log_abs_det, z

    def _map(self, x):
        return self._pass(x, log_det=False)[0]

    def forward(self, x):
        y, log_abs_det, _ = self._pass(x)
        return y, log_abs_det

    def inverse(self, y):
        # Exact inverse: couplings undone last to first (``b = (b' - t(a)) e^{-s(a)}``),
        # then ``x = W^{-1} (h_0 - b)``.
        h = y
        for coupling in range(self.n_layers - 1, -1, -1):
            kept, moved, unsplit = self._split(coupling)
            a, b = h.index_select(1, kept), h.index_select(1, moved)
            out, _ = self.conditioners[coupling](a)
            n_moved = b.shape[1]
            s, _ = self._log_scale(out[:, :n_moved])
            b = (b - out[:, n_moved:]) * torch.exp(-s)
            h = torch.cat((a, b), dim=1).index_select(1, unsplit)
        return _linalg.solve(self.weight, (h - self.bias).T).T

    def _push(self, x, tangents, log_det, generator=None):
        return self._pass(x, tangents=tangents, identity=tangents is None, log_det=log_det)

def build_realnvp(X, settings):
    """``flow='realnvp'``: :meth:`RealNVPFlow.from_data` with ``n_layers`` couplings.

    The depth is the estimator's ``n_layers``, the number of couplings (default 8; the
    paper's comparator used 6). ``flow_params`` may set:

    - ``hidden_features`` (tuple of positive ints, default ``(64, 64)``): widths of each
      conditioner's hidden ReLU layers. The paper's comparator used ``(512, 512)``.
      Measured on the paper's sine wave (2000 training points, one thread, estimator
      defaults otherwise), ``(512, 512)`` costs about ten times as much per epoch; it
      learns more per epoch (held-out -0.23 vs -1.06 nats/sample after 30 epochs) but
      in the time it takes for 30 epochs ``(64, 64)`` runs its 400 and reaches +1.00
      (the Gaussian: -3.81; the 'mlp' flow: -0.71).
    - ``scale_clamp`` (positive float, default 3.0): bound on each coupling's
      log-scales, ``s = c tanh(s_raw / c)``.

    The flow starts at the whitening of ``X`` with identity couplings (see
    :meth:`RealNVPFlow.from_data`), i.e. at the linear flow's Gaussian solution.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data.
    settings : FlowSettings

    Returns
    -------
    flow : RealNVPFlow

    """
    params = settings.params("realnvp", DEFAULT_PARAMS)
    return RealNVPFlow.from_data(
        X, settings.alpha, n_layers=settings.n_layers,
        hidden_features=_check_hidden_features(params["hidden_features"]),
        scale_clamp=_check_scale_clamp(params["scale_clamp"]),
        generator=settings.generator)
