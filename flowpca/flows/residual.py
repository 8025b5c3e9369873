"""Invertible residual flows (Behrmann et al., 2019; Chen et al., 2019).

``f = B_K o ... o B_1 o A`` with an affine map ``A(x) = W x + b`` (started at the data's
whitening, the linear flow's optimum) and residual blocks ``B_k(h) = h + g_k(h)`` whose
``g_k`` are :class:`~flowpca.flows._spectral.LipschitzMLP` with ``Lip(g_k) < 1``: each
block is invertible (by fixed-point iteration) and its Jacobian ``I + J_g`` is dense, so
the local components vary genuinely with ``x``.
"""

import dataclasses
import math
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from .. import _linalg
from . import _spectral
from ._base import RenamedAttribute, TangentPassFlow, draw_seed, renamed_parameter, whitening

# Rows per chunk of the exact log-determinant at evaluation: at most this many floats in
# the per-row Jacobians of one block.
_EXACT_CHUNK_FLOATS = 2**23


def _warn_not_converged(what, residual, tol, max_iter):
    failed = ~(residual <= tol)
    if bool(failed.any()):
        warnings.warn(
            f"{what} did not converge for {int(failed.sum())} of {failed.numel()} rows "
            f"within max_iter={max_iter} iterations (worst relative residual "
            f"{float(residual.nan_to_num(math.inf).max()):.3g} > tol={tol:g}).",
            ConvergenceWarning, stacklevel=3)


class ResidualFlow(TangentPassFlow):
    """Invertible residual flow ``y = B_K(... B_1(W x + b))``, ``B_k(h) = h + g_k(h)``.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    n_layers : int, default=8
        Number of residual blocks ``K`` (``n_blocks`` before flowpca 0.2, deprecated).
    hidden_features : tuple of int, default=(32, 32)
        Hidden widths of each ``g_k`` (``hidden_sizes`` before flowpca 0.2, deprecated).
    lipschitz : float, default=0.9
        Bound ``c`` in ``(0, 1)`` on the spectral norm of every linear layer of the
        ``g_k``, so ``Lip(g_k) <= c^(len(hidden_features) + 1) < 1``.
    n_power_iterations : int, default=1
        Power iterations per training step for the spectral-norm estimates.
    activation : {'lipswish', 'elu'}, default='lipswish'
        Activation of the ``g_k``.
    exact_logdet_max_features : int, default=10
        While training, ``log|det(I + J_g)|`` is exact (``slogdet`` of the formed
        Jacobian) up to this ``D`` and estimated by the unbiased power series above it.
    eval_exact_logdet_max_features : int, default=512
        The same switch in evaluation mode (scores of the fitted model): exact, hence
        deterministic, up to this ``D``.
    n_exact_terms : int, default=2
        Series terms always computed by the estimator.
    geometric_p : float, default=0.5
        The number of further terms is geometric with this success probability: the
        mean number of terms is ``n_exact_terms + (1 - p) / p``.
    inverse_tol : float, default=1e-10
        Relative residual at which the fixed-point inversion of a block stops.
    inverse_max_iter : int, default=500
        Fixed-point iterations at most per block; a :class:`ConvergenceWarning` reports
        rows that did not converge.
    seed : int, default=0
        Seed of the estimator's probes when no generator is given: training draws from
        one private generator; each evaluation restarts from ``seed``, so scores are
        reproducible.

    Attributes
    ----------
    weight : torch.nn.Parameter of shape (D, D)
    bias : torch.nn.Parameter of shape (D,)
        The affine map ``A``.
    blocks : torch.nn.ModuleList of LipschitzMLP
        The ``g_k``.

    Notes
    -----
    The power-series estimate of ``log det(I + J_g)`` is unbiased; its variance grows
    with ``Lip(g)``: term ``k`` is ``O(Lip(g)^k / k)`` and weighted by
    ``(1 - p)^-(k - n_exact_terms)``, so the variance is finite when
    ``Lip(g)^2 < 1 - p`` (for larger ``Lip(g)`` it relies on the spectrum of ``J_g``
    being smaller than the bound, as it typically is). Its gradient is the Neumann
    series of Chen et al. (2019) (no graph through the terms). With
    ``D <= eval_exact_logdet_max_features`` (the default covers up to 512 features)
    scores do not use it.

    Call :meth:`finalize_training` after training: it rescales every layer by its exact
    spectral norm, so the bound holds exactly (the power-iteration estimate is a lower
    bound of the norm).

    References
    ----------
    J. Behrmann et al., "Invertible Residual Networks", ICML 2019.
    R. T. Q. Chen et al., "Residual Flows for Invertible Generative Modeling",
    NeurIPS 2019.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import ResidualFlow
    >>> X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = ResidualFlow.from_data(X, alpha=1e-3, n_layers=2, hidden_features=(8,),
    ...                               generator=torch.Generator().manual_seed(0))
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([20, 3]), torch.Size([20]))
    >>> bool((flow.inverse(y) - X).abs().max() < 1e-8)
    True
    """

    renamed_parameters = {"n_blocks": "n_layers", "hidden_sizes": "hidden_features"}
    n_blocks = RenamedAttribute("n_blocks", "n_layers")
    hidden_sizes = RenamedAttribute("hidden_sizes", "hidden_features")

    def __init__(self, n_features, n_layers=8, hidden_features=(32, 32), lipschitz=0.9,
                 n_power_iterations=1, activation="lipswish", exact_logdet_max_features=10,
                 eval_exact_logdet_max_features=512, n_exact_terms=2, geometric_p=0.5,
                 inverse_tol=1e-10, inverse_max_iter=500, seed=0, *, n_blocks=None,
                 hidden_sizes=None):
        super().__init__(n_features)
        if n_blocks is not None:
            n_layers = renamed_parameter("n_blocks", "n_layers", n_blocks)
        if hidden_sizes is not None:
            hidden_features = renamed_parameter("hidden_sizes", "hidden_features",
                                                hidden_sizes)
        self.n_layers = int(n_layers)
        self.hidden_features = tuple(int(h) for h in hidden_features)
        self.lipschitz = float(lipschitz)
        self.n_power_iterations = int(n_power_iterations)
        self.activation = activation
        self.exact_logdet_max_features = int(exact_logdet_max_features)
        self.eval_exact_logdet_max_features = int(eval_exact_logdet_max_features)
        self.n_exact_terms = int(n_exact_terms)
        self.geometric_p = float(geometric_p)
        self.inverse_tol = float(inverse_tol)
        self.inverse_max_iter = int(inverse_max_iter)
        self.seed = int(seed)
        self._generator = None
        self.weight = nn.Parameter(torch.eye(self.n_features, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(self.n_features, dtype=torch.float64))
        self.blocks = nn.ModuleList([self._make_g() for _ in range(self.n_layers)])

    def _make_g(self):
        return _spectral.LipschitzMLP(self.n_features, self.hidden_features, self.lipschitz,
                                      self.n_power_iterations, self.activation)

    def get_config(self):
        return {"n_features": self.n_features, "n_layers": self.n_layers,
                "hidden_features": self.hidden_features, "lipschitz": self.lipschitz,
                "n_power_iterations": self.n_power_iterations,
                "activation": self.activation,
                "exact_logdet_max_features": self.exact_logdet_max_features,
                "eval_exact_logdet_max_features": self.eval_exact_logdet_max_features,
                "n_exact_terms": self.n_exact_terms, "geometric_p": self.geometric_p,
                "inverse_tol": self.inverse_tol, "inverse_max_iter": self.inverse_max_iter,
                "seed": self.seed}

    @classmethod
    def from_data(cls, X, alpha, generator=None, output_scale=0.1, **kwargs):
        """A flow that starts at the Gaussian solution of ``X``: ``A`` is the whitening
        of ``Sigma_hat + alpha I`` and each ``g_k`` is small (its last layer scaled by
        ``output_scale``).

        Parameters
        ----------
        X : torch.Tensor of shape (n, D)
            Centered data; its dtype and device are the flow's.
        alpha : float
            Variance floor of the whitening.
        generator : torch.Generator, optional
            Source of the random weights; a generator seeded with 0 if omitted.
        output_scale : float, default=0.1
            Scale of the last layer of each ``g_k`` relative to the usual initialization.
        **kwargs
            Constructor arguments other than ``n_features``.

        Returns
        -------
        flow : ResidualFlow

        Examples
        --------
        ``A`` whitens ``X`` exactly; the blocks start as small perturbations of the identity:

        >>> import torch
        >>> from flowpca.flows import ResidualFlow
        >>> X = torch.randn(100, 3, generator=torch.Generator().manual_seed(0),
        ...                 dtype=torch.float64)
        >>> X = X * torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64)
        >>> X = X - X.mean(dim=0)
        >>> flow = ResidualFlow.from_data(X, alpha=0.0, n_layers=2, hidden_features=(8,))
        >>> h = X @ flow.weight.T + flow.bias
        >>> torch.allclose(h.T @ h / len(X), torch.eye(3, dtype=torch.float64))
        True
        >>> y, _ = flow(X)
        >>> bool((y - h).abs().max() < 0.1)
        True
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        flow = cls(X.shape[1], **kwargs).to(device=X.device, dtype=X.dtype)
        with torch.no_grad():
            flow.weight.copy_(whitening(X, alpha))
            for g in flow._g_modules():
                g.reset_parameters(generator, output_scale)
        return flow

    def _g_modules(self):
        return list(self.blocks)

    def finalize_training(self):
        # Rescale every layer by its exact spectral norm (see
        # :meth:`LipschitzMLP.finalize`).
        for g in self._g_modules():
            g.finalize()

    # ------------------------------------------------------------------ log-det helpers
    def _exact_log_det(self):
        limit = (self.exact_logdet_max_features if self.training
                 else self.eval_exact_logdet_max_features)
        return self.n_features <= limit

    def _series_generator(self, generator):
        if generator is not None:
            return generator
        if not self.training:  # evaluation: the same probes at every call
            return torch.Generator(device=self.weight.device).manual_seed(self.seed)
        if self._generator is None or self._generator.device != self.weight.device:
            self._generator = torch.Generator(device=self.weight.device).manual_seed(
                self.seed)
        return self._generator

    def _block_log_det(self, state, slopes, h, exact, generator):
        """``log|det(I + J_g(h))|`` and, when exact, the formed ``J_g``."""
        if exact:
            jacobian_g = _spectral.jacobian(state, slopes, h.shape[0])
            return _spectral.exact_log_det(jacobian_g), jacobian_g
        n_terms = _spectral.roulette_terms(generator, self.n_exact_terms, self.geometric_p,
                                           generator.device)
        probes = torch.randn((h.shape[0], 1, h.shape[1]), generator=generator,
                             dtype=h.dtype, device=generator.device).to(h.device)
        return _spectral.series_log_det(state, slopes, probes, n_terms, self.n_exact_terms,
                                        self.geometric_p), None

    def _affine(self, x, tangents, identity):
        h = torch.addmm(self.bias, x, self.weight.T)
        if identity:
            tangents = self.weight.T.expand(x.shape[0], -1, -1)
        elif tangents is not None:
            tangents = tangents @ self.weight.T
        return h, tangents

    def _pass(self, x, tangents=None, identity=False, log_det=True, generator=None):
        """One pass: ``y``, ``log|det J_f|`` (or None) and the pushed tangent rows."""
        h, T = self._affine(x, tangents, identity)
        exact = self._exact_log_det()
        if log_det and not exact:
            generator = self._series_generator(generator)
        log_abs_det = _linalg.slogdet(self.weight)[1].expand(x.shape[0]) if log_det else None
        for g in self.blocks:
            state = g.state()
            out, slopes = _spectral.evaluate(state, h)
            jacobian_g = None
            if log_det:
                block_log_det, jacobian_g = self._block_log_det(state, slopes, h, exact,
                                                                generator)
                log_abs_det = log_abs_det + block_log_det
            if T is not None:
                T = T + (T @ jacobian_g.transpose(1, 2) if jacobian_g is not None
                         else _spectral.push(state, slopes, T))
            h = h + out
        return h, log_abs_det, T

    def _chunks(self, n_rows):
        if self.training or not self._exact_log_det():
            return [slice(0, n_rows)]
        step = max(1, _EXACT_CHUNK_FLOATS // self.n_features ** 2)
        return [slice(start, start + step) for start in range(0, max(n_rows, 1), step)]

    # ------------------------------------------------------------------ contract
    def forward(self, x, generator=None):
        parts = [self._pass(x[rows], generator=generator)[:2]
                 for rows in self._chunks(x.shape[0])]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _map(self, x):
        return self._pass(x, log_det=False)[0]

    def inverse(self, y):
        # Invert block by block by fixed-point iteration ``h <- y - g(h)``, then ``A``.
        with torch.no_grad():
            h = y.detach()
            worst = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
            for g in reversed(self.blocks):
                h, residual = _spectral.solve_block(g.state(), h, self.inverse_tol,
                                                    self.inverse_max_iter, "fixed_point")
                worst = torch.maximum(worst, residual)
            _warn_not_converged("ResidualFlow.inverse", worst, self.inverse_tol,
                                self.inverse_max_iter)
            return _linalg.solve(self.weight, (h - self.bias).T).T

    def _push(self, x, tangents, log_det, generator=None):
        return self._pass(x, tangents=tangents, identity=tangents is None, log_det=log_det,
                          generator=generator)

    def inverse_jacobian_operators(self, x):
        # Products with ``J_f(x)^{-1}`` and ``J_f(x)^{-T}`` from one LU factorization of
        # each row's Jacobian, which the transposed solves reuse (see
        # :meth:`Flow.inverse_jacobian_operators`).
        jacobian = self.jacobian(x)
        LU, pivots = _linalg.lu_factor(jacobian)

        def apply_inverse(V):
            return _linalg.lu_solve(LU, pivots, V.transpose(1, 2)).transpose(1, 2)

        def apply_inverse_transpose(V):
            return _linalg.lu_solve(LU, pivots, V.transpose(1, 2), adjoint=True).transpose(1, 2)

        return apply_inverse, apply_inverse_transpose

def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"flow_params[{name!r}] must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _probability(name, value, closed_right=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value and (
        value <= 1 if closed_right else value < 1)
    if not ok:
        interval = "(0, 1]" if closed_right else "(0, 1)"
        raise ValueError(f"flow_params[{name!r}] must be a float in {interval}, got "
                         f"{value!r}.")
    return float(value)


def residual_params(family, settings, extra_defaults=None):
    """``flow_params`` of the residual-type families, merged into the defaults and
    validated (``ValueError`` naming the key).

    Parameters
    ----------
    family : str
        The family's name, for error messages.
    settings : FlowSettings
    extra_defaults : dict, optional
        Further accepted keys with their defaults.

    Returns
    -------
    params : dict
        Every accepted key (see :func:`build_residual`) with its validated value.
    """
    flow_params = dict(settings.flow_params)
    if "hidden_sizes" in flow_params:  # the residual families' name before 0.2
        if "hidden_features" in flow_params:
            raise ValueError("flow_params has both 'hidden_features' and its deprecated "
                             "name 'hidden_sizes'; keep 'hidden_features'.")
        warnings.warn("flow_params['hidden_sizes'] is deprecated and will be removed in "
                      "flowpca 0.3: use 'hidden_features', the name every family uses.",
                      FutureWarning, stacklevel=2)
        flow_params["hidden_features"] = flow_params.pop("hidden_sizes")
    settings = dataclasses.replace(settings, flow_params=flow_params)
    defaults = {"hidden_features": (32, 32), "lipschitz": 0.9, "n_power_iterations": 1,
                "activation": "lipswish", "exact_logdet_max_features": 10,
                "eval_exact_logdet_max_features": 512, "n_exact_terms": 2,
                "geometric_p": 0.5, "inverse_tol": 1e-10, "inverse_max_iter": 500,
                "output_scale": 0.1, **(extra_defaults or {})}
    params = settings.params(family, defaults)
    hidden = params["hidden_features"]
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not (isinstance(hidden, (tuple, list)) and all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)):
        raise ValueError(f"flow_params['hidden_features'] must be a tuple of positive "
                         f"ints, got {params['hidden_features']!r}.")
    params["hidden_features"] = tuple(hidden)
    params["lipschitz"] = _probability("lipschitz", params["lipschitz"])
    params["geometric_p"] = _probability("geometric_p", params["geometric_p"],
                                         closed_right=True)
    for name in ("n_power_iterations", "exact_logdet_max_features",
                 "eval_exact_logdet_max_features", "n_exact_terms"):
        params[name] = _positive_int(name, params[name], minimum=0)
    params["inverse_max_iter"] = _positive_int("inverse_max_iter", params["inverse_max_iter"])
    if params["activation"] not in _spectral.ACTIVATIONS:
        raise ValueError(f"flow_params['activation'] must be one of "
                         f"{_spectral.ACTIVATIONS}, got {params['activation']!r}.")
    for name in ("inverse_tol", "output_scale"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"flow_params[{name!r}] must be a positive float, got "
                             f"{value!r}.")
        params[name] = float(value)
    return params


def build_residual(X, settings):
    """``flow='residual'``: :meth:`ResidualFlow.from_data` with ``n_layers`` blocks.

    ``flow_params`` (all optional):

    - ``hidden_features`` (tuple of int, default (32, 32)): hidden widths of each ``g``
      (``hidden_sizes`` before flowpca 0.2: deprecated, with a ``FutureWarning``);
    - ``lipschitz`` (float in (0, 1), default 0.9): spectral-norm bound of each layer;
    - ``n_power_iterations`` (int, default 1): power iterations per training step;
    - ``activation`` ('lipswish' or 'elu', default 'lipswish');
    - ``exact_logdet_max_features`` (int, default 10): exact log-det while training up
      to this many features, power-series estimator above;
    - ``eval_exact_logdet_max_features`` (int, default 512): the same for scoring;
    - ``n_exact_terms`` (int, default 2) and ``geometric_p`` (float in (0, 1], default
      0.5): the estimator's number of terms, ``n_exact_terms + Geometric(p)``;
    - ``inverse_tol`` (float, default 1e-10) and ``inverse_max_iter`` (int, default
      500): fixed-point inversion of the blocks;
    - ``output_scale`` (float, default 0.1): initial scale of each ``g``'s last layer.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data; its dtype and device are the flow's.
    settings : FlowSettings
        The estimator's settings (:class:`flowpca.flows._families.FlowSettings`).

    Returns
    -------
    flow : ResidualFlow

    """
    return build_residual_like(ResidualFlow, "residual", X, settings)


def build_residual_like(cls, family, X, settings):
    """``cls.from_data`` with ``settings.n_layers`` blocks and the validated
    ``flow_params`` of ``family`` (see :func:`residual_params`).

    Parameters
    ----------
    cls : type
        :class:`ResidualFlow` or a subclass.
    family : str
        The family's name, for error messages.
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data.
    settings : FlowSettings

    Returns
    -------
    flow : cls
    """
    params = residual_params(family, settings)
    output_scale = params.pop("output_scale")
    seed = draw_seed(settings.generator)
    return cls.from_data(X, settings.alpha, generator=settings.generator,
                         output_scale=output_scale, n_layers=settings.n_layers, seed=seed,
                         **params)
