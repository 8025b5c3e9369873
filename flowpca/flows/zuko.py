"""zuko's normalizing flows behind the Flow contract (``flow='nsf'``, ``flow='maf'``).

:class:`ZukoFlow` adapts any unconditional zuko flow (a :class:`zuko.flows.Flow`, or its
lazy transform) to :class:`~flowpca.flows.Flow`: ``forward`` through the transform's
``call_and_ladj``, the exact ``inverse`` through its ``inv``, Jacobian-vector products by
forward-mode automatic differentiation (:func:`torch.func.jvp`), Jacobians and the
penalty's Frobenius norm by reverse mode, in chunks of rows.
A fixed affine standardization ``z = (x - shift) / scale`` comes first, part of the flow
and of its log-determinant: zuko's splines act on ``[-5, 5]`` only (identity outside).

:class:`NSFFlow` and :class:`MAFFlow` build zuko's neural spline flow (rational-quadratic
spline couplings) and masked autoregressive flow from constructor arguments alone (ints
and tuples), so fitted models store as those arguments plus weight arrays (pickle and
skops). zuko is a required dependency (the default family is 'nsf'), imported only when a
flow is built.
"""

import copy
import functools
import math

import torch

from ._base import Flow, RenamedAttribute, check_frobenius_method, draw_seed, \
    renamed_parameter

_INSTALL_HINT = ('zuko is required for the flows of the zuko family (flow=\'nsf\', the '
                 'default, and \'maf\'); install it with: pip install zuko')

# Fitted flows' Jacobians by forward mode from this many features, in chunks of about
# _FORWARD_MODE_TANGENTS row-tangent pairs. Measured ('nsf', 3 layers, one thread, float64,
# against the batched backward pass over all rows): 2.6x faster at D = 16 (256 rows a
# chunk), 4x at D = 64 (64 rows); at D = 3 the backward pass was 1.2x faster; chunks 4x
# larger cost 1.4-2.5x more (cache), 4x smaller up to 1.5x more (per-call overhead).
_FORWARD_MODE_MIN_FEATURES = 8
_FORWARD_MODE_TANGENTS = 4096

# Rows per forward pass of jacobian() and the exact Frobenius norm (bounds the memory of
# the autograd graph; the chunks' results are concatenated).
_CHUNK_ROWS = 4096


def _import_zuko():
    """The zuko package, or an ImportError that says what to install."""
    try:
        import zuko
        import zuko.flows
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return zuko


def _unconditional_transform(flow, n_features):
    """The lazy transform of a zuko flow (checking its base is N(0, I)), or ``flow``
    itself when it is a lazy transform; ``n_features`` inferred from the base."""
    zuko = _import_zuko()
    if isinstance(flow, zuko.flows.Flow):
        base = flow.base()
        event_shape = tuple(base.event_shape)
        if len(event_shape) != 1:
            raise ValueError(f"The zuko flow's base distribution has event shape "
                             f"{event_shape}; flowpca needs vectors (one dimension).")
        if n_features is not None and int(n_features) != event_shape[0]:
            raise ValueError(f"n_features={n_features} but the zuko flow acts on "
                             f"{event_shape[0]} features.")
        n_features = event_shape[0]
        _check_standard_normal(base, n_features)
        return flow.transform, n_features
    if isinstance(flow, zuko.flows.LazyTransform):
        if n_features is None:
            raise ValueError("n_features is required when wrapping a zuko lazy transform "
                             "(a zuko.flows.Flow gives it through its base distribution).")
        return flow, int(n_features)
    raise TypeError(f"Expected a zuko.flows.Flow or zuko.flows.LazyTransform, got "
                    f"{type(flow).__name__}.")


def _check_standard_normal(base, n_features):
    # flowpca's target is N(0, I): only the flow's transform is used, so a different base
    # would silently change the model.
    message = ("The zuko flow's base distribution must be the standard normal N(0, I), "
               "flowpca's target (only the flow's transform is used).")
    with torch.no_grad():
        z = torch.linspace(-3.0, 3.0, 7 * n_features).reshape(7, n_features)
        try:
            log_prob = base.log_prob(z.to(base.mean.dtype)).double()
        except Exception as error:  # noqa: BLE001 - any failure means "not N(0, I)"
            raise ValueError(message) from error
        expected = (-0.5 * z.double().pow(2).sum(dim=1)
                    - 0.5 * n_features * math.log(2 * math.pi))
    if log_prob.shape != expected.shape or not torch.allclose(
            log_prob, expected, rtol=1e-5, atol=1e-5):
        raise ValueError(message)


class ZukoFlow(Flow):
    """Any unconditional zuko flow as a flowpca :class:`~flowpca.flows.Flow`.

    ``f(x) = T((x - shift) / scale)`` with ``T`` the zuko flow's transform: the fixed
    standardization brings the data into the range of zuko's splines (``[-5, 5]``, identity
    outside) and contributes ``-sum(log scale)`` to ``log|det J_f|``.

    Parameters
    ----------
    flow : zuko.flows.Flow or zuko.flows.LazyTransform
        An unconditional zuko flow (its base distribution must be the standard normal,
        flowpca's target; only its transform is used) or its lazy transform. It becomes a
        submodule (not copied).
    n_features : int, optional
        Dimension ``D``; required for a lazy transform, inferred for a flow.

    Attributes
    ----------
    transform : zuko.flows.LazyTransform
        The wrapped transform ``T``.
    shift, scale : torch.Tensor of shape (D,)
        Buffers of the standardization (0 and 1 at construction; see
        :meth:`standardize_for`).

    Notes
    -----
    ``jvp`` uses forward-mode automatic differentiation through zuko's transforms
    (:func:`torch.func.jvp`); ``jacobian`` and the penalty's ``frobenius_sq`` use reverse
    mode (one batched backward pass over the ``D`` unit vectors, resp. ``n_probes``
    backward passes, after one forward pass, in chunks of rows). Reverse mode is cheaper
    for training: the penalty's gradient through forward mode (:func:`torch.func.jvp`,
    then backward) measured 1.2-2.2 times slower per step than reverse-over-reverse
    (``benchmarks/results/zuko_penalty_speed.md``).

    A fitted estimator with a wrapped user flow is stored with the flow's classes
    (pickle, or skops with those types trusted); :class:`NSFFlow` and :class:`MAFFlow`
    store as arguments and arrays only.

    Examples
    --------
    zuko initializes its networks from torch's global generator: build the zuko flow
    inside :func:`torch.random.fork_rng` to keep the global state as it was.

    >>> import torch
    >>> import zuko
    >>> from flowpca.flows import ZukoFlow
    >>> with torch.random.fork_rng(devices=[]):
    ...     _ = torch.manual_seed(0)
    ...     maf = zuko.flows.MAF(2, transforms=1, hidden_features=(8,))
    >>> X = torch.randn(10, 2, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = ZukoFlow(maf.to(torch.float64)).standardize_for(X)
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([10, 2]), torch.Size([10]))
    >>> torch.allclose(flow.inverse(y), X)
    True
    """

    # A spline or autoregressive flow bends the data's image in latent space: its
    # projected components are not monotone along the manifold, its integrated ones are.
    default_component_map = "integrated"

    def __init__(self, flow, n_features=None):
        transform, n_features = _unconditional_transform(flow, n_features)
        super().__init__(n_features)
        self.transform = transform
        self.register_buffer("shift", torch.zeros(self.n_features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(self.n_features, dtype=torch.float64))
        self._check_unconditional()

    def _check_unconditional(self):
        parameter = next(self.transform.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.float64
        try:
            with torch.no_grad():
                self.transform().call_and_ladj(torch.zeros(1, self.n_features, dtype=dtype))
        except Exception as error:  # noqa: BLE001 - whatever breaks, the same advice
            raise ValueError("The zuko flow must be unconditional (context=0) and act on "
                             f"vectors of {self.n_features} features.") from error

    def get_config(self):
        # Constructor arguments: the wrapped zuko module (a copy, on CPU).
        return {"flow": copy.deepcopy(self.transform).cpu(), "n_features": self.n_features}

    @torch.no_grad()
    def standardize_for(self, X, floor=0.0, domain=None):
        """Set the standardization to ``X``'s per-feature mean and standard deviation.

        Parameters
        ----------
        X : torch.Tensor of shape (n, D)
        floor : float, default=0.0
            Added to each variance (the penalty's variance floor ``alpha``), so constant
            features keep a finite scale.
        domain : float, optional
            When given, each feature's scale is at least its largest deviation from the
            mean divided by ``domain``, so every row of ``X`` lands inside
            ``[-domain, domain]`` (a spline flow transforms only that range).

        Returns
        -------
        self : ZukoFlow

        Examples
        --------
        >>> import torch
        >>> from flowpca.flows import MAFFlow
        >>> X = torch.tensor([[0.0, 5.0], [2.0, 5.0]], dtype=torch.float64)  # a constant feature
        >>> flow = MAFFlow(2, n_layers=1, hidden_features=(8,)).standardize_for(X, floor=3.0)
        >>> flow.shift.tolist()
        [1.0, 5.0]
        >>> torch.allclose(flow.scale ** 2, torch.tensor([1.0 + 3.0, 0.0 + 3.0],
        ...                                              dtype=torch.float64))
        True

        A far outlier widens its feature's scale so that it stays inside the domain:

        >>> X = torch.cat([torch.linspace(-1, 1, 99, dtype=torch.float64), torch.tensor(
        ...     [20.0], dtype=torch.float64)])[:, None]
        >>> flow = MAFFlow(1, n_layers=1, hidden_features=(8,)).standardize_for(X, domain=4.5)
        >>> float(((X - flow.shift) / flow.scale).abs().max())
        4.5
        """
        variance = X.var(dim=0, unbiased=False) if X.shape[0] > 1 else torch.zeros_like(X[0])
        scale = (variance + floor).clamp_min(torch.finfo(X.dtype).tiny).sqrt()
        shift = X.mean(dim=0)
        if domain is not None and X.shape[0] > 0:
            scale = torch.maximum(scale, (X - shift).abs().amax(dim=0) / float(domain))
        self.shift.copy_(shift)
        self.scale.copy_(scale)
        return self

    def _standardized(self, x):
        return (x - self.shift) / self.scale

    def forward(self, x):
        y, ladj = self.transform().call_and_ladj(self._standardized(x))
        return y, ladj - self.scale.log().sum()

    def _map(self, x):
        return self.transform()(self._standardized(x))

    def inverse(self, y):
        # Exact inverse through the zuko transform's ``inv`` (for autoregressive
        # transforms, one pass per autoregressive step).
        return self.transform().inv(y) * self.scale + self.shift

    def _with_input_gradients(self, x, compute):
        """``compute(x_leaf, y, log_abs_det)`` with ``x_leaf`` a version of ``x`` that
        autograd differentiates through (reverse mode); the result keeps its graph (for
        training) only where gradients are enabled by the caller."""
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            y, log_abs_det = self.forward(leaf)
            result = compute(leaf, y, log_abs_det, keep_graph)
        if keep_graph:
            return result
        return tuple(None if t is None else t.detach() for t in result)

    def jacobian(self, x):
        # Per-row Jacobians (rows of ``x`` are independent), in chunks of rows: by
        # forward-mode differentiation where no gradient has to flow through ``J``, else
        # row by row of ``J`` by reverse mode (``D`` backward passes through one forward
        # pass).
        n, D = x.shape
        if n and D >= _FORWARD_MODE_MIN_FEATURES and not (torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.parameters()))):
            rows = max(16, _FORWARD_MODE_TANGENTS // D)
            try:
                return torch.cat([self._forward_mode_jacobian(x[start:start + rows])
                                  for start in range(0, n, rows)])
            except RuntimeError:  # an op of a user's flow without a batching rule
                pass
        blocks = [self._jacobian_pass(x[start:start + _CHUNK_ROWS])[2]
                  for start in range(0, x.shape[0], _CHUNK_ROWS)]
        return torch.cat(blocks) if blocks else x.new_empty((0,) + x.shape[1:] * 2)

    def _forward_mode_jacobian(self, x):
        # Where no graph is needed (fitted flows, transform), forward mode over the D unit
        # tangents, vectorized over rows: the same J to ~1e-13 in float64.
        def image(row):
            return self.forward(row[None])[0][0]

        return torch.func.vmap(torch.func.jacfwd(image))(x)

    def _jacobian_pass(self, x):
        def compute(leaf, y, log_abs_det, keep_graph):
            n, D = y.shape
            # The D rows of J as one batched backward pass (vmap over the unit vectors):
            # 1.3-1.5 times cheaper per training step than D separate passes at D = 3,
            # because zuko's small tensors make the cost one of op count, not size.
            units = torch.eye(D, dtype=y.dtype, device=y.device)[:, None, :].expand(D, n, D)
            try:
                rows = torch.autograd.grad(y, leaf, units, create_graph=keep_graph,
                                           retain_graph=True, is_grads_batched=True)[0]
            except RuntimeError:  # an op of a user's flow without a batching rule
                rows = torch.stack([torch.autograd.grad(y, leaf, unit,
                                                        create_graph=keep_graph,
                                                        retain_graph=True)[0]
                                    for unit in units])
            return y, log_abs_det, rows.transpose(0, 1)
        return self._with_input_gradients(x, compute)

    def _frobenius(self, x, method, n_probes, generator, log_det):
        check_frobenius_method(method)
        if method == "exact":
            parts = [self._jacobian_pass(x[start:start + _CHUNK_ROWS])
                     for start in range(0, x.shape[0], _CHUNK_ROWS)]
            y, log_abs_det, J = (torch.cat(items) for items in zip(*parts))
            return y, log_abs_det, J.pow(2).sum(dim=(1, 2))
        if generator is None:
            raise ValueError("method='hutchinson' needs a torch.Generator: flowpca never "
                             "draws from torch's global random number generator.")
        probes = torch.randn((n_probes,) + x.shape, generator=generator, dtype=x.dtype,
                             device=generator.device).to(x.device)

        def compute(leaf, y, log_abs_det, keep_graph):
            # ||J^T eps||^2 has the distribution of ||J eps||^2 (both are
            # sum_i s_i^2 chi^2_1 for eps ~ N(0, I)); reverse mode is ~2x cheaper than
            # forward mode through zuko's splines.
            total = 0.0
            for probe in probes:
                pulled = torch.autograd.grad(y, leaf, probe, create_graph=keep_graph,
                                             retain_graph=True)[0]
                total = total + pulled.pow(2).sum(dim=1)
            return y, log_abs_det, total / n_probes
        return self._with_input_gradients(x, compute)

    def frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        return self._frobenius(x, method, n_probes, generator, log_det=False)[2]

    def forward_and_frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        # ``forward(x)`` and ``frobenius_sq(x)`` from one forward pass (the same
        # estimate as :meth:`frobenius_sq` for the same ``generator`` state).
        return self._frobenius(x, method, n_probes, generator, log_det=True)


def _built(seed, make):
    """``make(zuko)`` in float64, its parameters initialized from ``seed`` (zuko draws
    from torch's global generator, which is left as it was)."""
    zuko = _import_zuko()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        return make(zuko).to(torch.float64)


class NSFFlow(ZukoFlow):
    """zuko's neural spline flow with rational-quadratic spline *couplings*.

    ``n_layers`` coupling layers (zuko ``NSF`` with ``passes=2``: each spline of half the
    features is conditioned on the other half, alternating), so both directions cost one
    pass per layer. After a fixed standardization (see :class:`ZukoFlow`).

    Parameters
    ----------
    n_features : int
        Dimension ``D``. With ``D = 1`` zuko uses one free (unconditioned) spline per layer.
    n_layers : int, default=3
        Number of coupling layers (``transforms`` before flowpca 0.2, deprecated).
    hidden_features : tuple of int, default=(64, 64)
        Hidden layer sizes of each layer's conditioner network.
    bins : int, default=8
        Bins of each rational-quadratic spline.
    bound : float, default=5.0
        Half-width of the splines' domain ``[-bound, bound]`` (zuko's 5 by default);
        standardized features outside it pass through a layer unchanged.
    seed : int, default=0
        Seed of the initialization (zuko's default initializers).

    References
    ----------
    C. Durkan, A. Bekasov, I. Murray and G. Papamakarios, "Neural Spline Flows", 2019.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import NSFFlow
    >>> X = torch.randn(10, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = NSFFlow(3, n_layers=2, hidden_features=(8,), seed=0).standardize_for(X)
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([10, 3]), torch.Size([10]))
    >>> torch.allclose(flow.inverse(y), X)
    True
    """

    renamed_parameters = {"transforms": "n_layers"}
    transforms = RenamedAttribute("transforms", "n_layers")

    def __init__(self, n_features, n_layers=3, hidden_features=(64, 64), bins=8,
                 bound=5.0, seed=0, *, transforms=None):
        if transforms is not None:
            n_layers = renamed_parameter("transforms", "n_layers", transforms)
        hidden_features = tuple(int(h) for h in hidden_features)
        bins, bound = int(bins), float(bound)
        # zuko's NSF with the spline's domain as a parameter (zuko.flows.NSF fixes it at 5).
        flow = _built(seed, lambda zuko: zuko.flows.MAF(
            int(n_features), transforms=int(n_layers), passes=2,
            univariate=functools.partial(zuko.transforms.MonotonicRQSTransform,
                                         bound=bound, slope=1e-3),
            shapes=[(bins,), (bins,), (bins - 1,)], hidden_features=hidden_features))
        super().__init__(flow)
        self.n_layers, self.hidden_features = int(n_layers), hidden_features
        self.bins, self.bound, self.seed = bins, bound, int(seed)

    def get_config(self):
        return {"n_features": self.n_features, "n_layers": self.n_layers,
                "hidden_features": self.hidden_features, "bins": self.bins,
                "bound": getattr(self, "bound", 5.0), "seed": self.seed}


class MAFFlow(ZukoFlow):
    """zuko's masked autoregressive flow (affine autoregressive layers).

    The inverse takes ``D`` sequential passes per layer. After a fixed standardization
    (see :class:`ZukoFlow`).

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    n_layers : int, default=3
        Number of autoregressive layers, orders alternating (``transforms`` before
        flowpca 0.2, deprecated).
    hidden_features : tuple of int, default=(64, 64)
        Hidden layer sizes of each layer's masked network.
    seed : int, default=0
        Seed of the initialization.

    References
    ----------
    G. Papamakarios, T. Pavlakou and I. Murray, "Masked Autoregressive Flow for Density
    Estimation", 2017.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import MAFFlow
    >>> X = torch.randn(10, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = MAFFlow(3, n_layers=2, hidden_features=(8,), seed=0).standardize_for(X)
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([10, 3]), torch.Size([10]))
    >>> torch.allclose(flow.inverse(y), X)
    True
    """

    renamed_parameters = {"transforms": "n_layers"}
    transforms = RenamedAttribute("transforms", "n_layers")

    def __init__(self, n_features, n_layers=3, hidden_features=(64, 64), seed=0, *,
                 transforms=None):
        if transforms is not None:
            n_layers = renamed_parameter("transforms", "n_layers", transforms)
        hidden_features = tuple(int(h) for h in hidden_features)
        flow = _built(seed, lambda zuko: zuko.flows.MAF(
            int(n_features), transforms=int(n_layers), hidden_features=hidden_features))
        super().__init__(flow)
        self.n_layers, self.hidden_features = int(n_layers), hidden_features
        self.seed = int(seed)

    def get_config(self):
        return {"n_features": self.n_features, "n_layers": self.n_layers,
                "hidden_features": self.hidden_features, "seed": self.seed}


def build_nsf(X, settings):
    """``flow='nsf'``: :class:`NSFFlow` standardized on ``X``.

    ``n_layers`` coupling layers; ``flow_params`` may set ``hidden_features`` (default
    (64, 64)), ``bins`` (8) and ``bound`` (5.0, the splines' domain ``[-bound, bound]``):
    zuko's own defaults. The standardization keeps every training point inside
    ``0.9 * bound`` (see :meth:`ZukoFlow.standardize_for`).

    Measured (``tests/test_zuko_quality.py``, 1 000 train / 1 000 test, 3 layers, 200
    epochs, ``early_stopping=True``, otherwise the estimator's defaults, seeds 0-2): on
    the 2-D sine ``x2 = sin(x1) + 0.1 eps`` -0.941 / -0.946 / -1.016 nats per sample,
    0.016 to 0.020 above the same zuko NSF trained by a plain Adam loop (lr 1e-3), and
    above the best-BIC Gaussian mixture on 2 seeds of 3; on scikit-learn's S-curve (noise
    0.05) 0.007 to 0.12 above the plain loop and 0.025 to 0.31 above the mixture. Without
    early stopping the held-out score after a fixed number of epochs swings by up to 0.4
    nats between seeds with the default ``learning_rate_init=3e-2``. A training step
    (batch 200, 3-D, 8 layers) costs about 4-5 times the unpenalized one with the exact
    penalty (``benchmarks/results/zuko_penalty_speed.md``); 3 layers is a good start for
    small ``D``. Local components: the NSF bends the data manifold's image in its latent
    space, so the projected components ``S^-1 U^T f(x)`` are no global coordinates (on
    the paper's S-curve their absolute Spearman correlation with ``t`` is 0.3-0.4), while
    its local directions are right (median absolute cosine 0.999 with the curve's
    tangent): the estimator's ``component_map='auto'`` therefore integrates the local
    frame for zuko's flows (:mod:`flowpca.components._integration`), which recovers ``t`` and the
    height with absolute Spearman correlation >= 0.95
    (``tests/test_integrated_components.py``).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data; its dtype and device are the flow's.
    settings : FlowSettings
        The estimator's settings (:class:`flowpca.flows._families.FlowSettings`).

    Returns
    -------
    flow : NSFFlow

    """
    params = settings.params("nsf", {"hidden_features": (64, 64), "bins": 8, "bound": 5.0})
    flow = NSFFlow(X.shape[1], n_layers=settings.n_layers,
                   hidden_features=params["hidden_features"], bins=params["bins"],
                   bound=params["bound"], seed=draw_seed(settings.generator))
    # Every training point inside 90 % of the splines' domain: a feature with far tails
    # (the banana's ``x2`` reaches 10 standard deviations) would otherwise pass through
    # every layer unchanged out there. Measured (seeds 0-2, 2 000 points): the banana's
    # held-out likelihood -2.921 -> -2.860 nats, digits' 73.9 -> 75.5 (seed 0); data
    # within 4.5 standard deviations are standardized as before.
    return flow.to(X.device, X.dtype).standardize_for(X, settings.alpha,
                                                      domain=0.9 * params["bound"])


def build_maf(X, settings):
    """``flow='maf'``: :class:`MAFFlow` standardized on ``X``.

    ``n_layers`` autoregressive layers; ``flow_params`` may set ``hidden_features``
    (default (64, 64)).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data; its dtype and device are the flow's.
    settings : FlowSettings
        The estimator's settings (:class:`flowpca.flows._families.FlowSettings`).

    Returns
    -------
    flow : MAFFlow

    """
    params = settings.params("maf", {"hidden_features": (64, 64)})
    flow = MAFFlow(X.shape[1], n_layers=settings.n_layers,
                   hidden_features=params["hidden_features"], seed=draw_seed(settings.generator))
    return flow.to(X.device, X.dtype).standardize_for(X, settings.alpha)
