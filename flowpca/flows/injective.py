"""Injective (rectangular) flow ``g: R^d -> R^D`` for data on a d-dimensional manifold.

``x = g(z) = h(pad(z))`` with ``h`` an invertible MLP on ``R^D`` (the "body", from padded
latent to data) and ``pad`` placing ``z`` in the last ``d`` coordinates with zeros before.
Generation runs the MLP forward (its layers grow at most linearly, so samples far in
the latent tails stay finite); projection runs its exact inverse. The latent ``z`` has its
own ``d``-dimensional MLP flow (the "base") to ``N(0, I_d)``. As in rectangular flows
(Caterini et al., 2021):

- projection onto the manifold: ``z = g^+(x)``, the last ``d`` coordinates of
  ``h^{-1}(x)``;
  reconstruction ``x_hat = g(g^+(x))``;
- density on the manifold: ``log p(x_hat) = log p_z(z) - 1/2 log det(J_g^T J_g)``, with
  ``J_g(z)`` the ``D x d`` Jacobian of ``g``;
- training minimizes ``-log p(x_hat) + ||x - x_hat||^2 / (2 sigma^2)``: the likelihood
  on the manifold plus the reconstruction (off-manifold) term, i.e. the negative
  log-density of a manifold thickened by isotropic noise of variance ``sigma^2``.

The volume term ``1/2 log det(J_g^T J_g)`` has two gradient modes:

- ``'exact'`` forms ``J_g`` with ``d`` Jacobian-vector products and sums the logs of
  its singular values (equivalent to a Cholesky factor of ``J_g^T J_g``, without
  squaring the condition number): cost ``d`` passes.
- ``'stochastic'`` uses Hutchinson's trace estimator,
  ``d/dtheta log det G = E_eps[eps^T G^{-1} (dG/dtheta) eps]`` with ``G = J_g^T J_g``,
  ``eps ~ N(0, I_d)``: ``v = G^{-1} eps`` by conjugate gradients with the products
  ``J_g u`` and ``J_g^T w`` only (matrix-free), then the gradient of
  ``(J_g v)^T (J_g eps)`` with ``v`` held fixed. Its value is still the exact volume
  (computed without gradient), so losses and scores are the same in both modes; only
  the gradient is estimated.

The :class:`Flow` contract is kept so that the estimator trains it unchanged:
``forward(x)`` returns ``y = [base(z), (x - x_hat) / sigma]`` and a log-determinant
such that ``-||y||^2/2 - D/2 log(2 pi) + log_abs_det`` is the thickened log-density
above; ``inverse(y)`` is ``g(base^{-1}(y[:, :d]))`` (the off-manifold part of ``y`` is
ignored), so samples lie on the manifold.
"""

import math

import torch

from ._base import Flow, covariance_spectrum, data_scale
from .mlp import MLPFlow

_VOLUME_MODES = ("exact", "stochastic")


class InjectiveFlow(Flow):
    """Injective flow ``x = g(z)``, ``z`` in ``R^d``, ``x`` in ``R^D`` (``d <= D``).

    Parameters
    ----------
    n_features : int
        Data dimension ``D``.
    n_components : int
        Latent (manifold) dimension ``d``, ``1 <= d <= D``.
    n_layers : int, default=4
        Hidden blocks of the body (the invertible MLP on ``R^D``).
    latent_layers : int, default=2
        Hidden blocks of the base flow on ``R^d``.
    activation : {'leaky_softplus', 'asinh'}, default='leaky_softplus'
        Nonlinearity of both MLPs. 'leaky_softplus' has slopes in ``(0.1, 1)``, so both
        the generation and the projection (its inverse) are Lipschitz; with 'asinh' the
        projection's ``sinh`` layers overflow for points off the training range.
    noise_variance : float, default=1e-3
        ``sigma^2`` of the reconstruction term ``||x - x_hat||^2 / (2 sigma^2)``.
    volume : {'exact', 'stochastic'}, default='exact'
        Gradient mode of the volume term (see the module documentation).
    n_probes : int, default=1
        Hutchinson probes per point for ``volume='stochastic'``.
    seed : int, default=0
        Seed of the private generator of the probes (never torch's global one).

    Attributes
    ----------
    body : MLPFlow
        The bijection ``h`` of ``R^D`` (padded latent to data).
    base : MLPFlow
        The latent density's flow ``R^d -> R^d``.

    Examples
    --------
    Points of a plane in ``R^3`` (``d = 2``): with the identity initialization of the
    constructor the manifold is the plane ``x_1 = s(0)`` (``s`` the layers' activation,
    applied to the zero padding), parallel to that of the last two coordinates.

    >>> import torch
    >>> from flowpca.flows import InjectiveFlow
    >>> flow = InjectiveFlow(3, 2, n_layers=1, latent_layers=1)
    >>> z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> x = flow.generate(z)
    >>> x.shape
    torch.Size([5, 3])
    >>> torch.allclose(flow.project(x), z)
    True

    ``forward`` returns the ``d`` latent coordinates followed by the ``D`` coordinates
    of the scaled off-manifold residual ``(x - x_hat) / sigma``:

    >>> y, log_abs_det = flow(x)
    >>> y.shape, log_abs_det.shape
    (torch.Size([5, 5]), torch.Size([5]))
    >>> torch.allclose(flow.inverse(y), x)
    True
    >>> bool(flow.off_manifold_distance(x).max() < 1e-8)
    True

    The density on the manifold is the latent one with the volume term
    ``1/2 log det(J_g^T J_g)`` of the ``(D, d)`` Jacobian of ``g``:

    >>> J = flow.jacobian_g(z)
    >>> J.shape
    torch.Size([5, 3, 2])
    >>> log_volume = flow.half_log_det_gram(z)  # the sum of log singular values of J_g
    >>> torch.allclose(log_volume, torch.linalg.svdvals(J).log().sum(dim=-1))
    True
    >>> torch.allclose(flow.volume_term(z), log_volume)  # its value; the gradient is exact
    True
    >>> flow.stochastic_volume_surrogate(z).shape  # the gradient by Hutchinson probes
    torch.Size([5])
    >>> z_hat, x_hat = flow.reconstruct(x)  # on the manifold: x comes back
    >>> torch.allclose(x_hat, x)
    True
    >>> flow.manifold_log_likelihood(x).shape
    torch.Size([5])

    Training has no Tikhonov term (``alpha`` sets the noise floor instead):

    >>> y, log_abs_det, penalty = flow.forward_and_frobenius_sq(x)
    >>> torch.equal(penalty, flow.frobenius_sq(x)), bool((penalty == 0).all())
    (True, True)
    >>> torch.equal(flow.forward(x)[0], y)
    True
    """

    is_injective = True

    def __init__(self, n_features, n_components, n_layers=4, latent_layers=2,
                 activation="leaky_softplus", noise_variance=1e-3, volume="exact", n_probes=1,
                 seed=0):
        super().__init__(n_features)
        self.n_components = int(n_components)
        if not 1 <= self.n_components <= self.n_features:
            raise ValueError(f"The latent dimension n_components={n_components} must be "
                             f"between 1 and n_features={n_features}.")
        if volume not in _VOLUME_MODES:
            raise ValueError(f"volume must be one of {_VOLUME_MODES}, got {volume!r}.")
        if not (isinstance(noise_variance, (int, float)) and noise_variance > 0):
            raise ValueError(f"noise_variance must be a float > 0, got {noise_variance!r}.")
        if not (isinstance(n_probes, int) and n_probes >= 1):
            raise ValueError(f"n_probes must be an int >= 1, got {n_probes!r}.")
        self.n_layers, self.latent_layers = int(n_layers), int(latent_layers)
        self.activation, self.volume = activation, volume
        self.noise_variance, self.n_probes, self.seed = float(noise_variance), n_probes, seed
        self.body = MLPFlow(self.n_features, n_layers=self.n_layers, activation=activation)
        self.base = MLPFlow(self.n_components, n_layers=self.latent_layers,
                            activation=activation)
        self._generator = None

    def get_config(self):
        return {"n_features": self.n_features, "n_components": self.n_components,
                "n_layers": self.n_layers, "latent_layers": self.latent_layers,
                "activation": self.activation, "noise_variance": self.noise_variance,
                "volume": self.volume, "n_probes": self.n_probes, "seed": self.seed}

    # ------------------------------------------------------------------ the maps
    def _pad(self, z):
        zeros = z.new_zeros(z.shape[0], self.n_features - self.n_components)
        return torch.cat((zeros, z), dim=1)

    def project(self, x):
        """Latent coordinates ``z = g^+(x)`` of (centered) points, shape ``(n, d)``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Centered points.

        Returns
        -------
        z : torch.Tensor of shape (n, d)

        """
        return self.body.inverse(x)[:, self.n_features - self.n_components:]

    def generate(self, z):
        """Points ``g(z)`` on the manifold (centered), shape ``(n, D)``.

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent points.

        Returns
        -------
        x : torch.Tensor of shape (n, D)

        """
        return self.body._map(self._pad(z))

    def reconstruct(self, x):
        """``(z, x_hat)``: the latent coordinates and the projection onto the manifold.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Centered points.

        Returns
        -------
        z : torch.Tensor of shape (n, d)
            ``g^+(x)``.
        x_hat : torch.Tensor of shape (n, D)
            ``g(g^+(x))``.

        """
        z = self.project(x)
        return z, self.generate(z)

    def off_manifold_distance(self, x):
        """``||x - g(g^+(x))||`` per row: 0 on the manifold.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Centered points.

        Returns
        -------
        torch.Tensor of shape (n,)

        """
        z, x_hat = self.reconstruct(x)
        return (x - x_hat).norm(dim=1)

    def _jacobian_operators(self, z):
        """``U -> J_g U`` (rows, ``(n, q, d) -> (n, q, D)``) and ``W -> J_g^T W``
        (``(n, q, D) -> (n, q, d)``) at the latent points ``z``: tangents pushed through
        the body's layers, and their transposes by reverse mode."""
        u = self._pad(z)
        first_latent = self.n_features - self.n_components

        def jg(U):
            padded = torch.cat((U.new_zeros(U.shape[:2] + (first_latent,)), U), dim=2)
            return self.body._pass(u, tangents=padded, log_det=False)[2]

        def jg_transpose(W):
            q = W.shape[1]
            repeated = u.unsqueeze(1).expand(-1, q, -1).reshape(-1, self.n_features)
            _, pullback = torch.func.vjp(self.body._map, repeated)
            out = pullback(W.reshape(-1, self.n_features))[0]
            return out.reshape(W.shape[0], q, self.n_features)[..., first_latent:]

        return jg, jg_transpose

    def jacobian_g(self, z):
        """``J_g(z)``, shape ``(n, D, d)``, from ``d`` tangents pushed through the body.

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent points.

        Returns
        -------
        torch.Tensor of shape (n, D, d)

        """
        jg, _ = self._jacobian_operators(z)
        eye = torch.eye(self.n_components, dtype=z.dtype, device=z.device)
        return jg(eye.expand(z.shape[0], -1, -1)).transpose(1, 2)

    def half_log_det_gram(self, z):
        """``1/2 log det(J_g^T J_g) = sum_i log sigma_i(J_g)`` at ``z`` per row
        (differentiable). From the singular values of ``J_g`` rather than a Cholesky
        factor of ``J_g^T J_g``, which squares the condition number: no jitter needed,
        and the gradient of singular values is stable even when they repeat.

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent points.

        Returns
        -------
        torch.Tensor of shape (n,)

        """
        singular_values = torch.linalg.svdvals(self.jacobian_g(z))
        return singular_values.clamp_min(torch.finfo(z.dtype).tiny).log().sum(dim=1)

    def stochastic_volume_surrogate(self, z, n_probes=None, generator=None,
                                    max_iter=None, tol=1e-10):
        """A zero-valued term whose gradient is an unbiased estimate of that of
        ``1/2 log det(J_g^T J_g)`` per row (Hutchinson + conjugate gradients).

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent points (with their graph, so gradients reach the weights).
        n_probes : int, optional
            Probes per row (default: the flow's ``n_probes``).
        generator : torch.Generator, optional
            Source of the probes (default: the flow's private generator).
        max_iter : int, optional
            Conjugate-gradient iterations at most (default ``2 d``).
        tol : float, default=1e-10
            Relative residual at which conjugate gradients stop.

        Returns
        -------
        torch.Tensor of shape (n,)

        """
        n, d = z.shape[0], self.n_components
        q = n_probes or self.n_probes
        generator = generator or self._probe_generator(z.device)
        eps = torch.randn((n, q, d), generator=generator, dtype=z.dtype,
                          device=generator.device).to(z.device)
        jg, jg_transpose = self._jacobian_operators(z)
        with torch.no_grad():
            v = _conjugate_gradients(lambda u: jg_transpose(jg(u)), eps,
                                     max_iter or 2 * d, tol)
        surrogate = (jg(v) * jg(eps)).sum(dim=2).mean(dim=1)
        return 0.5 * (surrogate - surrogate.detach())

    def _probe_generator(self, device):
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def volume_term(self, z):
        """``1/2 log det(J_g^T J_g)`` with the gradient of the flow's ``volume`` mode
        (the stochastic one only while training with gradients).

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent points.

        Returns
        -------
        torch.Tensor of shape (n,)

        """
        if self.volume == "exact" or not (self.training and torch.is_grad_enabled()):
            return self.half_log_det_gram(z)
        with torch.no_grad():
            value = self.half_log_det_gram(z)
        return value + self.stochastic_volume_surrogate(z)

    def manifold_log_likelihood(self, x):
        """``log p_z(z) - 1/2 log det(J_g^T J_g)`` at ``z = g^+(x)``: the density on the
        manifold of the projection of ``x`` (w.r.t. the manifold's volume measure).

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Centered points.

        Returns
        -------
        torch.Tensor of shape (n,)

        """
        z = self.project(x)
        y, log_det_base = self.base(z)
        log_pz = (-0.5 * y.pow(2).sum(dim=1) - 0.5 * self.n_components * math.log(2 * math.pi)
                  + log_det_base)
        return log_pz - self.volume_term(z)

    # ------------------------------------------------------------------ Flow contract
    def forward(self, x):
        """``y = [base(z), (x - x_hat) / sigma]`` and the matching log-determinant.

        ``-||y||^2 / 2 - D/2 log(2 pi) + log_abs_det`` equals
        ``log p(x_hat) + log N(x - x_hat; 0, sigma^2 I_{D-d})``: the training objective
        (negated) of the rectangular flow, a density thickened off the manifold.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Centered points.

        Returns
        -------
        y : torch.Tensor of shape (n, d + D)
            The base flow's image of ``z = g^+(x)``, then ``(x - x_hat) / sigma``.
        log_abs_det : torch.Tensor of shape (n,)

        """
        z, x_hat = self.reconstruct(x)
        y_latent, log_det_base = self.base(z)
        sigma = math.sqrt(self.noise_variance)
        y = torch.cat((y_latent, (x - x_hat) / sigma), dim=1)
        n_normal = self.n_features - self.n_components
        log_abs_det = log_det_base - self.volume_term(z) - n_normal * math.log(sigma)
        return y, log_abs_det

    def inverse(self, y):
        """``g(base^{-1}(y[:, :d]))``: the point on the manifold (off-manifold part of
        ``y`` ignored), so that sampling ``y ~ N(0, I)`` samples the manifold.

        Parameters
        ----------
        y : torch.Tensor of shape (n, k), k >= d
            Latent points; only the first ``d`` columns are used.

        Returns
        -------
        x : torch.Tensor of shape (n, D)

        """
        return self.generate(self.base.inverse(y[:, :self.n_components]))

    def forward_and_frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        """``forward(x)`` and a zero penalty: the injective flow has no Tikhonov term
        (``alpha`` sets the noise floor instead, see :func:`build_injective`).

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        method, n_probes, generator
            Accepted for the :class:`Flow` contract and ignored.

        Returns
        -------
        y : torch.Tensor of shape (n, d + D)
        log_abs_det : torch.Tensor of shape (n,)
            As in :meth:`forward`.
        frobenius_sq : torch.Tensor of shape (n,)
            Zeros.

        """
        y, log_abs_det = self.forward(x)
        return y, log_abs_det, torch.zeros_like(log_abs_det)

    def frobenius_sq(self, x, method="exact", n_probes=1, generator=None):
        """Zero: no Tikhonov penalty (see :meth:`forward_and_frobenius_sq`).

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
        method, n_probes, generator
            Accepted for the :class:`Flow` contract and ignored.

        Returns
        -------
        torch.Tensor of shape (n,)
            Zeros.

        """
        return x.new_zeros(x.shape[0])


def _conjugate_gradients(apply, B, max_iter, tol):
    """Solve ``apply(X) = B`` for symmetric positive definite ``apply``, batched over the
    leading dimensions (last dimension the vector), without forming the matrix."""
    X = torch.zeros_like(B)
    R = B.clone()
    P = R.clone()
    rr = R.pow(2).sum(dim=-1, keepdim=True)
    threshold = tol**2 * rr.clamp_min(torch.finfo(B.dtype).tiny)
    for _ in range(max_iter):
        if bool((rr <= threshold).all()):
            break
        AP = apply(P)
        step = rr / (P * AP).sum(dim=-1, keepdim=True).clamp_min(torch.finfo(B.dtype).tiny)
        X = X + step * P
        R = R - step * AP
        rr_new = R.pow(2).sum(dim=-1, keepdim=True)
        P = R + (rr_new / rr.clamp_min(torch.finfo(B.dtype).tiny)) * P
        rr = rr_new
    return X


def _colouring_body(X, alpha, n_layers, activation, input_scale=0.5):
    """A body ``h`` that starts close to the linear optimum's colouring
    ``u -> V diag(sqrt(lambda + alpha)) u`` (eigenvalues ascending, so the last
    coordinates, the latent ones, are the leading principal directions): the first
    layer scales by ``input_scale``, the hidden ones are identities, the last undoes the
    scale and colours."""
    n_features = X.shape[1]
    eye = torch.eye(n_features, dtype=X.dtype, device=X.device)
    variances, vectors = covariance_spectrum(X, alpha)
    colouring = vectors * variances.sqrt()
    body = MLPFlow(n_features, n_layers=n_layers, activation=activation).to(X.device, X.dtype)
    with torch.no_grad():
        if n_layers:
            body.weights[0].copy_(input_scale * eye)
            colouring = colouring / input_scale
        body.weights[n_layers].copy_(colouring)
        # The activation need not fix 0: shift so that g(0) = 0 (the data's mean).
        body.biases[n_layers].sub_(body._map(X.new_zeros(1, n_features))[0])
    return body


def build_injective(X, settings):
    """``flow='injective'``: body initialized at the colouring of the linear optimum
    (the projection starts as PCA's onto the ``d`` leading axes), base flow initialized
    on the resulting latent coordinates (:meth:`MLPFlow.from_data`).

    Both MLPs use the 'leaky_softplus' nonlinearity (``settings.activation``, the 'mlp'
    flow's, is ignored): see :class:`InjectiveFlow`. ``settings.n_components`` is the
    latent dimension (None: ``D``). ``flow_params``
    accepts ``latent_layers`` (3: the base flow's depth; 2 left samples in the base's
    tails off the ends of a circle's arc), ``noise_variance`` (None: ``alpha`` plus ``1e-3``
    times the mean feature variance), ``volume`` ('exact') and ``n_probes`` (1); the
    body has ``n_layers`` hidden blocks.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data; its dtype and device are the flow's.
    settings : FlowSettings
        The estimator's settings (:class:`flowpca.flows._families.FlowSettings`).

    Returns
    -------
    flow : InjectiveFlow

    """
    params = settings.params("injective", {"latent_layers": 3, "noise_variance": None,
                                           "volume": "exact", "n_probes": 1})
    n_features = X.shape[1]
    n_components = settings.n_components or n_features
    noise_variance = params["noise_variance"]
    if noise_variance is None:
        noise_variance = settings.alpha + 1e-3 / data_scale(X, 0.0) ** 2
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=settings.generator))
    activation = "leaky_softplus"
    flow = InjectiveFlow(n_features, n_components, n_layers=settings.n_layers,
                         latent_layers=params["latent_layers"],
                         activation=activation, noise_variance=noise_variance,
                         volume=params["volume"], n_probes=params["n_probes"], seed=seed)
    flow = flow.to(X.device, X.dtype)
    body = _colouring_body(X, settings.alpha, settings.n_layers, activation)
    with torch.no_grad():
        z = body.inverse(X)[:, n_features - n_components:]
        base = MLPFlow.from_data(z, 0.0 if z.shape[0] > z.shape[1] else 1e-6,
                                 n_layers=params["latent_layers"],
                                 activation=activation, generator=settings.generator)
    flow.body.load_state_dict(body.state_dict())
    flow.base.load_state_dict(base.state_dict())
    return flow
