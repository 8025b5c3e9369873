"""The generalized invertible MLP of Feinman & Parthasarathy (2020).

``f = A_L o sigma o A_{L-1} o ... o sigma o A_1`` with full square affine maps
``A_l(h) = W_l h + b_l`` and an invertible elementwise nonlinearity ``sigma``. Its Jacobian
``J_f(x) = W_L D_{L-1} W_{L-1} ... D_1 W_1`` with ``D_l = diag(sigma'(u_l))`` gives the
log-determinant, Jacobian-vector products, the Frobenius norm and ``J^{-1} v`` from one
pass through the layers (docs/contributing.rst, "Performance by structure"), with one
``slogdet`` per layer rather than one per sample.
"""

import math

import torch
from torch import nn

from .. import _linalg
from ._base import TangentPassFlow, whitening


def _asinh(u, square=None, root=None):
    # torch.asinh is a scalar loop on CPU (about 20 ns per element); this vectorizes:
    # asinh|u| = log1p(|u| + u^2 / (1 + sqrt(1 + u^2))). Where u^2 overflows, the
    # result stays finite (log|u|, off by log 2: far beyond any sane pre-activation).
    if square is None:
        square = u * u
        root = torch.sqrt(1 + square)
    a = u.abs()
    return torch.copysign(torch.log1p(a + a * (a / (1 + root))), u)


class _AsinhFunction(torch.autograd.Function):
    """``asinh(u)`` with a fast forward; the backward is differentiable again."""

    generate_vmap_rule = True

    @staticmethod
    def forward(u):
        return _asinh(u)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * torch.rsqrt(1 + u * u)

    @staticmethod
    def jvp(ctx, tangent):
        (u,) = ctx.saved_tensors
        return tangent * torch.rsqrt(1 + u * u)


class _AsinhWithSlopeFunction(torch.autograd.Function):
    """``(asinh(u), sigma'(u), log sigma'(u))`` as one autograd node."""

    generate_vmap_rule = True

    @staticmethod
    def forward(u):
        square = u * u
        root = torch.sqrt(1 + square)
        return _asinh(u, square, root), torch.reciprocal(root), -torch.log(root)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # Saving the output ``slope`` keeps the double backward exact.
        ctx.save_for_backward(inputs[0], output[1])

    @staticmethod
    def backward(ctx, grad_h, grad_slope, grad_log_slope):
        # sigma' = s = (1 + u^2)^{-1/2}, d s / du = -u s^3, d log s / du = -u s^2.
        u, slope = ctx.saved_tensors
        inner = torch.addcmul(grad_log_slope, grad_slope, slope)
        return torch.addcmul(grad_h, u * slope, inner, value=-1) * slope


def _use_torch_asinh(u):
    # Below a few thousand elements (and on accelerators) the native op and its
    # autograd node are cheaper than the vectorized formula inside a Python Function.
    return u.device.type != "cpu" or u.numel() < 4096


class _Asinh:
    """``sigma(u) = asinh(u)``, ``sigma'(u) = (1 + u^2)^{-1/2}``, inverse ``sinh``."""

    def __call__(self, u):
        if _use_torch_asinh(u):
            return torch.asinh(u)
        return _AsinhFunction.apply(u)

    def with_slope(self, u):
        """``sigma(u)``, ``sigma'(u)`` and ``log sigma'(u)`` sharing their work."""
        if _use_torch_asinh(u):
            square = u * u
            return torch.asinh(u), torch.rsqrt(1 + square), -0.5 * torch.log1p(square)
        return _AsinhWithSlopeFunction.apply(u)

    def derivative(self, u):
        return torch.rsqrt(1 + u * u)

    def inverse(self, h):
        return torch.sinh(h)


class _LeakySoftplus:
    """``sigma(u) = a u + (1 - a) softplus(u)``: increasing, convex, onto R.

    ``sigma'(u) = a + (1 - a) sigmoid(u)`` lies in ``(a, 1)``. The inverse has no closed
    form and is computed by Newton's method.
    """

    def __init__(self, slope=0.1):
        self.slope = float(slope)

    def __call__(self, u):
        # Not F.softplus: its linear branch beyond u = 20 breaks sigma' = the sigmoid.
        softplus = torch.logaddexp(u, torch.zeros((), dtype=u.dtype, device=u.device))
        return self.slope * u + (1 - self.slope) * softplus

    def with_slope(self, u):
        slope = self.slope + (1 - self.slope) * torch.sigmoid(u)
        return self(u), slope, torch.log(slope)

    def derivative(self, u):
        return self.slope + (1 - self.slope) * torch.sigmoid(u)

    def inverse(self, h, max_iter=50):
        # sigma is convex and increasing, so Newton started to the right of the root
        # decreases monotonically to it. sigma(u) >= max(u, a u) gives such a start:
        # u0 = h for h >= 0 and u0 = h / a for h < 0, i.e. u0 = max(h, h / a).
        # Iterate without autograd, then take one differentiable Newton step: at the
        # root it has the implicit-function gradient 1 / sigma'(u).
        tol = 1e-12 if h.dtype == torch.float64 else 1e-6
        with torch.no_grad():
            u = torch.maximum(h, h / self.slope)
            for _ in range(max_iter):
                residual = self(u) - h
                u = u - residual / self.derivative(u)
                if bool((residual.abs() <= tol * (1 + h.abs())).all()):
                    break
        u = u.detach()
        return u - (self(u) - h) / self.derivative(u)


_ACTIVATIONS = {"asinh": _Asinh(), "leaky_softplus": _LeakySoftplus(0.1)}

class MLPFlow(TangentPassFlow):
    """Invertible MLP flow ``y = W_L h_L + b_L``, ``h_{l+1} = sigma(W_l h_l + b_l)``.

    ``n_layers`` hidden blocks, each a full square affine map followed by an invertible
    elementwise nonlinearity, then a final affine map with no nonlinearity: ``n_layers + 1``
    weight matrices in all (Feinman & Parthasarathy, 2020).

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    n_layers : int, default=8
        Number of hidden (affine + nonlinearity) blocks.
    activation : {'asinh', 'leaky_softplus'}, default='asinh'
        The nonlinearity ``sigma``. 'asinh' has ``sigma' = (1 + u^2)^{-1/2}`` and inverse
        ``sinh``; 'leaky_softplus' is ``0.1 u + 0.9 softplus(u)``, inverted by Newton's
        method.

    Attributes
    ----------
    weights : torch.nn.ParameterList
        The ``n_layers + 1`` matrices ``W_l`` of shape ``(D, D)``, identity at construction.
    biases : torch.nn.ParameterList
        The ``n_layers + 1`` vectors ``b_l`` of shape ``(D,)``, zero at construction.

    Notes
    -----
    Parameters are created in float64 (``.to(dtype)`` converts them; ``load_state_dict``
    casts to the dtype of the flow it loads into). Use :meth:`from_data` for an
    initialization fitted to data; the identity initialization of the constructor only
    fixes the shapes.

    ``log|det J|`` costs one LU factorization of each ``W_l`` per call, whatever the
    batch size, and the Jacobian products cost about one forward pass per pushed column:
    :meth:`jvp` and Hutchinson's estimate are cheap at any ``D``, while :meth:`jacobian`
    and the exact Frobenius norm cost about ``D`` passes and ``n * D^2`` memory.

    References
    ----------
    R. Feinman and N. Parthasarathy, "A Linear Systems Theory of Normalizing Flows", 2020.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import MLPFlow
    >>> X = torch.randn(100, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = MLPFlow.from_data(X, alpha=1e-4, n_layers=2)
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([100, 3]), torch.Size([100]))
    >>> torch.allclose(flow.inverse(y), X)
    True
    >>> jacobian = flow.jacobian(X[:2])
    >>> torch.allclose(torch.linalg.svdvals(jacobian).log().sum(-1), log_abs_det[:2])
    True
    """

    def __init__(self, n_features, n_layers=8, activation="asinh"):
        super().__init__(n_features)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}.")
        if int(n_layers) < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers!r}.")
        self.n_layers = int(n_layers)
        self.activation = activation
        self._sigma = _ACTIVATIONS[activation]
        eye = torch.eye(self.n_features, dtype=torch.float64)
        zero = torch.zeros(self.n_features, dtype=torch.float64)
        self.weights = nn.ParameterList(
            [nn.Parameter(eye.clone()) for _ in range(self.n_layers + 1)])
        self.biases = nn.ParameterList(
            [nn.Parameter(zero.clone()) for _ in range(self.n_layers + 1)])

    def get_config(self):
        return {"n_features": self.n_features, "n_layers": self.n_layers,
                "activation": self.activation}

    @classmethod
    def from_data(cls, X, alpha, n_layers=8, activation="asinh", generator=None,
                  noise_scale=0.01, hidden_scale=1.0):
        """Build a flow whose initial output is close to a standard normal on ``X``.

        - ``W_1 = c diag((lambda + alpha)^{-1/2}) V^T`` from the eigendecomposition
          ``Sigma_hat + alpha I = V diag(lambda + alpha) V^T``, ``Sigma_hat = X^T X / n``,
          with ``c = hidden_scale``: up to ``c``, the linear flow's optimum, so the first
          pre-activations are decorrelated with standard deviation ``c``; ``b_1 = 0``
          (``X`` is centered).
        - The other layers are ``W_l = C_l (I + E_l)`` with ``E_l`` i.i.d. normal of
          standard deviation ``noise_scale / sqrt(D)``, and ``C_l`` (diagonal) and
          ``b_l`` standardizing each pre-activation on ``X`` to mean 0 and standard
          deviation ``hidden_scale`` (1 for the last layer, so the output starts
          centered with unit variances), as ActNorm does. A pre-activation's standard
          deviation counts as at least the one the floor ``alpha`` gives it (isotropic
          noise of variance ``alpha`` on ``X``, propagated through the linearized
          layers): directions the data do not occupy (constant features, data on a
          subspace) start at the floor's scale instead of being amplified layer after
          layer.

        ``sigma`` contracts, so without the rescaling the units would shrink layer after
        layer into the range where ``sigma`` is almost linear, where training leaves the
        Gaussian solution slowly. With ``hidden_scale`` around 1 the units use the
        nonlinearity from the start, at the price of a worse initial likelihood (eight
        asinh layers make the output markedly light-tailed). On the paper's S-curve
        (docs/contributing.rst, "The paper's data sets"; 2 000 points, 8 000 Adam steps)
        the default 1.0 roughly
        tripled the ratio of the mean second to the mean third local variance over 0.5
        (31 to 39 against 8 to 14: the curled ends of the curve resolve), and 2.0 was no
        better than 1.0 (``benchmarks/results/s_curve_tuning.md``).

        Parameters
        ----------
        X : torch.Tensor of shape (n, D)
            Centered data; its dtype and device are the flow's.
        alpha : float
            Penalty weight (variance floor) of the whitening.
        n_layers : int, default=8
        activation : {'asinh', 'leaky_softplus'}, default='asinh'
        generator : torch.Generator, optional
            Source of the weight noise; a generator seeded with 0 if omitted.
        noise_scale : float, default=0.01
            Relative size of the random perturbation of the identity.
        hidden_scale : float, default=1.0
            Standard deviation of the hidden pre-activations on ``X`` at initialization.

        Returns
        -------
        flow : MLPFlow

        Examples
        --------
        The output on ``X`` starts centered with unit variances (the last layer standardizes):

        >>> import torch
        >>> from flowpca.flows import MLPFlow
        >>> X = torch.randn(200, 3, generator=torch.Generator().manual_seed(0),
        ...                 dtype=torch.float64)
        >>> X = X * torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64)
        >>> X = X - X.mean(dim=0)
        >>> flow = MLPFlow.from_data(X, alpha=1e-6, n_layers=2)
        >>> y, _ = flow(X)
        >>> torch.allclose(y.mean(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
        True
        >>> torch.allclose(y.std(dim=0, correction=0), torch.ones(3, dtype=torch.float64))
        True
        """
        n_features = X.shape[1]
        flow = cls(n_features, n_layers=n_layers, activation=activation).to(
            device=X.device, dtype=X.dtype)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            X = X.detach()
            eye = torch.eye(n_features, dtype=X.dtype, device=X.device)
            weight = whitening(X, alpha)
            if flow.n_layers:
                weight = weight * hidden_scale
            # The floor alpha acts like isotropic noise of variance alpha on X: `floor` is
            # the covariance it gives the current layer's units (linearized). The
            # standardization never divides a unit by less than its floor standard
            # deviation, so directions the data do not occupy (constant features, data on
            # a subspace) keep the floor's scale instead of being blown up by up to 1/eps
            # per layer. Where the data's spread exceeds the floor's (the usual case)
            # nothing changes.
            floor = weight @ (alpha * eye) @ weight.T if alpha > 0 else None
            h = X
            for layer in range(flow.n_layers + 1):
                if layer > 0:
                    noise = torch.randn((n_features, n_features), generator=generator,
                                        dtype=X.dtype, device=generator.device)
                    weight = eye + noise.to(X.device) * (noise_scale / math.sqrt(n_features))
                    u = h @ weight.T
                    scale = u.std(dim=0, correction=0)
                    if floor is not None:
                        floor = weight @ floor @ weight.T
                        scale = torch.maximum(scale, floor.diagonal().clamp_min(0).sqrt())
                    scale = scale.clamp_min(torch.finfo(X.dtype).eps)
                    if layer < flow.n_layers:
                        scale = scale / hidden_scale
                    weight = weight / scale[:, None]
                    if floor is not None:
                        floor = floor / (scale[:, None] * scale[None, :])
                    flow.biases[layer].copy_(-u.mean(dim=0) / scale)
                flow.weights[layer].copy_(weight)
                h = h @ weight.T + flow.biases[layer]
                if layer < flow.n_layers:
                    if floor is not None:
                        gain = flow._sigma.derivative(h).pow(2).mean(dim=0).sqrt()
                        floor = gain[:, None] * floor * gain[None, :]
                    h = flow._sigma(h)
        return flow

    def _pass(self, x, tangents=None, identity=False, log_det=True, keep_slopes=False):
        """One pass through the layers, pushing tangent vectors alongside ``x``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        tangents : torch.Tensor of shape (n, k, D), optional
            Row vectors ``v`` pushed to ``J_f(x) v`` (as rows).
        identity : bool
            Push the identity, i.e. ``tangents = I`` for every row (``k = D``), without
            forming it: the result is ``J_f(x)^T`` per row.
        log_det : bool
            Whether to compute ``log|det J_f(x)|``.
        keep_slopes : bool
            Whether to return the hidden layers' ``sigma'(u_l)``.

        Returns
        -------
        y, log_abs_det (or None), tangents (or None), slopes (list, or None)
        """
        h, z = x, tangents
        fuse_gemm = z is not None and x.shape[1] >= 128 and 8 * z.shape[1] <= x.shape[1]
        log_slopes = 0.0
        slopes = [] if keep_slopes else None
        n_hidden = self.n_layers
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if identity and layer == 0:
                # I @ W^T = W^T: the same for every row, broadcast below.
                u = torch.addmm(bias, h, weight.T)
                z = weight.T.unsqueeze(0)
            elif z is not None and fuse_gemm:
                # One GEMM for the point and its few tangents together (the bias only
                # enters the point): at large D one taller GEMM beats two.
                stacked = torch.cat((h.unsqueeze(1), z), dim=1) @ weight.T
                u = stacked[:, 0] + bias
                z = stacked[:, 1:]
            elif z is not None:
                u = torch.addmm(bias, h, weight.T)
                z = z @ weight.T
            else:
                u = torch.addmm(bias, h, weight.T)
            if layer == n_hidden:
                h = u
                break
            if log_det or z is not None or keep_slopes:
                h, slope, log_slope = self._sigma.with_slope(u)
                if log_det:
                    log_slopes = log_slopes + log_slope
                if z is not None:
                    z = z * slope.unsqueeze(1)
                if keep_slopes:
                    slopes.append(slope)
            else:
                h = self._sigma(u)
        if identity and z.shape[0] != x.shape[0]:
            z = z.expand(x.shape[0], -1, -1)
        log_abs_det = None
        if log_det:
            # One LU per layer, in one (guarded) batched call over the layers.
            weights_log_det = _linalg.slogdet(torch.stack(tuple(self.weights)))[1].sum()
            if n_hidden:
                log_abs_det = log_slopes.sum(dim=1) + weights_log_det
            else:
                log_abs_det = weights_log_det.expand(x.shape[0])
        return h, log_abs_det, z, slopes

    def _map(self, x):
        return self._pass(x, log_det=False)[0]

    def _push(self, x, tangents, log_det, generator=None):
        y, log_abs_det, T, _ = self._pass(x, tangents=tangents, identity=tangents is None,
                                          log_det=log_det)
        return y, log_abs_det, T

    def forward(self, x):
        y, log_abs_det, _, _ = self._pass(x)
        return y, log_abs_det

    def inverse(self, y):
        # Exact inverse, layer by layer: ``h_l = W_l^{-1} (sigma^{-1}(h_{l+1}) - b_l)``.
        h = y
        for layer in range(self.n_layers, -1, -1):
            if layer < self.n_layers:
                h = self._sigma.inverse(h)
            h = _linalg.solve(self.weights[layer], (h - self.biases[layer]).T).T
        return h

    def inverse_jvp(self, x, v):
        # ``J_f(x)^{-1} v`` row by row: ``W_1^{-1} D_1^{-1} ... D_{L-1}^{-1} W_L^{-1}
        # v``.
        _, _, _, slopes = self._pass(x, log_det=False, keep_slopes=True)
        z = v
        for layer in range(self.n_layers, -1, -1):
            if layer < self.n_layers:
                z = z / slopes[layer]
            z = _linalg.solve(self.weights[layer], z.T).T
        return z

    def inverse_jacobian_operators(self, x):
        # Products with ``J^{-1} = W_1^{-1} D_1^{-1} ... D_{L-1}^{-1} W_L^{-1}`` and its
        # transpose for many vectors per row: the slopes and the ``D x D`` inverses are
        # computed once, so each product is ``n_layers + 1`` matrix products.
        _, _, _, slopes = self._pass(x, log_det=False, keep_slopes=True)
        inverses = [_linalg.inv(weight) for weight in self.weights]

        def apply_inverse(V):
            z = V
            for layer in range(self.n_layers, -1, -1):
                z = z @ inverses[layer].T
                if layer > 0:
                    z = z / slopes[layer - 1].unsqueeze(1)
            return z

        def apply_inverse_transpose(V):
            z = V
            for layer in range(self.n_layers + 1):
                z = z @ inverses[layer]
                if layer < self.n_layers:
                    z = z / slopes[layer].unsqueeze(1)
            return z

        return apply_inverse, apply_inverse_transpose

