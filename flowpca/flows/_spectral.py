"""Lipschitz-constrained MLPs and the log-determinant tools of residual-type flows.

A residual block ``x + g(x)`` is invertible when ``Lip(g) < 1`` (Behrmann et al., 2019).
:class:`LipschitzMLP` is such a ``g``: linear layers whose spectral norms are kept at
most ``c < 1`` by spectral normalization, separated by 1-Lipschitz smooth activations,
so ``Lip(g) <= c^(number of linear layers) < 1``.

Everything is computed from the structure ``J_g(x) = W_L D_{L-1} W_{L-1} ... D_1 W_1``
(``D_l = diag(sigma'(u_l))``), as for the MLP flow: a pass through ``g`` returns the
slopes, with which tangent vectors are pushed (``J_g v``) or pulled (``J_g^T u``) by
matrix products, and the Jacobian is the identity pushed through.

``log|det(I + J_g)|`` is computed exactly (:func:`exact_log_det`, from the formed
Jacobian) or estimated without bias (:func:`series_log_det`) by the power series
``sum_k (-1)^(k+1) tr(J_g^k) / k`` truncated at a random ("Russian roulette") number of
terms, with Hutchinson's trace estimator and the Neumann-series gradient of Chen et al.
(2019), which needs no graph through the series.

References
----------
J. Behrmann, W. Grathwohl, R. T. Q. Chen, D. Duvenaud, J.-H. Jacobsen, "Invertible
Residual Networks", ICML 2019.
R. T. Q. Chen, J. Behrmann, D. Duvenaud, J.-H. Jacobsen, "Residual Flows for Invertible
Generative Modeling", NeurIPS 2019.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import _linalg

#: Activations of :class:`LipschitzMLP`.
ACTIVATIONS = ("lipswish", "elu")

# softplus(_BETA_INIT) = 1: LipSwish starts as swish(u) / 1.1.
_BETA_INIT = math.log(math.e - 1.0)
# sup_u d/du [u sigmoid(beta u)] = 1.0998... for every beta > 0 (Chen et al., 2019).
_LIPSWISH_DIVISOR = 1.1


def _transforms_active():
    """Whether a torch.func transform (vmap, jacrev, ...) is running: the power vectors
    cannot be updated in place inside one."""
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else False


def _check_lipschitz(lipschitz):
    if not 0.0 < float(lipschitz) < 1.0:
        raise ValueError(f"lipschitz must be in (0, 1), got {lipschitz!r}: a residual "
                         "block x + g(x) is invertible only when Lip(g) < 1.")


@dataclass
class MLPState:
    """The tensors of one evaluation of a :class:`LipschitzMLP`: spectrally normalized
    weights, biases and activation slopes ``beta`` (LipSwish) of each layer."""

    weights: tuple
    biases: tuple
    betas: tuple
    activation: str

    def tensors(self):
        return (*self.weights, *self.biases, *self.betas)

    def with_tensors(self, tensors):
        n_w, n_b = len(self.weights), len(self.biases)
        return MLPState(tuple(tensors[:n_w]), tuple(tensors[n_w:n_w + n_b]),
                        tuple(tensors[n_w + n_b:]), self.activation)


def _activation(state, layer, u):
    """``sigma(u)`` and ``sigma'(u)`` of hidden layer ``layer``."""
    if state.activation == "elu":
        return F.elu(u), torch.where(u > 0, torch.ones_like(u), torch.exp(u.clamp_max(0)))
    beta = state.betas[layer]
    s = torch.sigmoid(beta * u)
    value = u * s / _LIPSWISH_DIVISOR
    slope = (s + beta * u * s * (1 - s)) / _LIPSWISH_DIVISOR
    return value, slope


def evaluate(state, h):
    """``g(h)`` and the slopes ``sigma'(u_l)`` of the hidden layers."""
    slopes = []
    n_hidden = len(state.weights) - 1
    for layer, (weight, bias) in enumerate(zip(state.weights, state.biases)):
        u = torch.addmm(bias, h, weight.T)
        if layer == n_hidden:
            return u, slopes
        h, slope = _activation(state, layer, u)
        slopes.append(slope)


def push(state, slopes, T):
    """``J_g T``: tangent rows ``T`` of shape ``(n, k, D)`` pushed through ``g``."""
    for layer, weight in enumerate(state.weights):
        T = T @ weight.T
        if layer < len(slopes):
            T = T * slopes[layer].unsqueeze(1)
    return T


def pull(state, slopes, U):
    """``J_g^T U``: cotangent rows ``U`` of shape ``(n, k, D)`` pulled back through ``g``."""
    for layer in range(len(state.weights) - 1, -1, -1):
        if layer < len(slopes):
            U = U * slopes[layer].unsqueeze(1)
        U = U @ state.weights[layer]
    return U


def jacobian(state, slopes, n_rows):
    """Per-row ``J_g`` of shape ``(n, D, D)`` (the identity pushed through)."""
    # Pushing the rows e_j gives the columns of J_g as rows: J_g^T.
    eye = state.weights[0].new_ones(state.weights[0].shape[1]).diag()
    return push(state, slopes, eye.expand(n_rows, -1, -1)).transpose(1, 2)


def exact_log_det(jacobian_g):
    """``log|det(I + J_g)|`` per row from the formed Jacobians ``(n, D, D)``."""
    eye = torch.eye(jacobian_g.shape[-1], dtype=jacobian_g.dtype, device=jacobian_g.device)
    return _linalg.slogdet(eye + jacobian_g)[1]


def roulette_terms(generator, n_exact_terms, p, device):
    """``n_exact_terms + G`` with ``G ~ Geometric(p)`` on ``{0, 1, ...}``, drawn from
    ``generator``; ``P(N >= k) = (1 - p)^max(0, k - n_exact_terms)``."""
    uniform = float(torch.rand((), generator=generator, dtype=torch.float64,
                               device=device))
    extra = int(math.floor(math.log1p(-uniform) / math.log1p(-p))) if p < 1 else 0
    return n_exact_terms + extra


def series_log_det(state, slopes, probes, n_terms, n_exact_terms, p, slopes_graph=None):
    """Unbiased estimate of ``log|det(I + J_g)|`` per row by the power series.

    ``log det(I + J) = sum_{k>=1} (-1)^(k+1) tr(J^k) / k`` (valid since ``||J|| < 1``),
    truncated at ``n_terms`` with every term ``k`` divided by ``P(N >= k)`` (Russian
    roulette: unbiased over ``N``), each trace by Hutchinson's ``v^T J^k v``. The value
    carries no graph; the gradient is that of the Neumann series
    ``d log det(I + J) = tr((I + J)^{-1} dJ)``, estimated the same way as
    ``q^T dJ v`` with ``q^T = v^T sum_{k>=0} (-J)^k / P(N >= k)`` (Chen et al., 2019), so
    memory does not grow with the number of terms.

    Parameters
    ----------
    state : MLPState
        The evaluation of ``g`` (its tensors may carry a graph).
    slopes : list of torch.Tensor
        Slopes of ``g`` at the rows (may carry a graph to the rows).
    probes : torch.Tensor of shape (n, k, D)
        Hutchinson probes (``E[v v^T] = I``); the estimate averages over the ``k``.
    n_terms : int
        Number of series terms (a draw of :func:`roulette_terms`).
    n_exact_terms : int
        Terms computed with probability one.
    p : float
        Parameter of the geometric tail of the number of terms.

    Returns
    -------
    torch.Tensor of shape (n,)
    """
    def survival(k):
        return (1.0 - p) ** max(0, k - n_exact_terms)

    with torch.no_grad():
        frozen = MLPState(tuple(t.detach() for t in state.weights), state.biases,
                          state.betas, state.activation)
        frozen_slopes = [s.detach() for s in slopes]
        value = torch.zeros(probes.shape[:2], dtype=probes.dtype, device=probes.device)
        power = probes
        # Left products for the gradient: q = sum_{k=0}^{N} (-J^T)^k v / P(N >= k).
        left, q = probes, probes.clone()
        for k in range(1, n_terms + 1):
            power = push(frozen, frozen_slopes, power)
            value += (-1) ** (k + 1) / k * (probes * power).sum(-1) / survival(k)
            left = pull(frozen, frozen_slopes, left)
            q += (-1) ** k * left / survival(k)
        value = value.mean(dim=1)
    if not torch.is_grad_enabled():
        return value
    surrogate = (q * push(state, slopes, probes)).sum(-1).mean(dim=1)
    return value + (surrogate - surrogate.detach())


class LipschitzMLP(nn.Module):
    """``g: R^D -> R^D``, an MLP with spectrally normalized layers, ``Lip(g) < 1``.

    Each linear layer uses ``W / max(1, sigma(W) / c)``, so its spectral norm is at most
    ``c``; the activations are 1-Lipschitz; so ``Lip(g) <= c^L`` for ``L`` layers.
    While training, ``sigma(W)`` is the power-iteration estimate ``u^T W v`` with
    persistent vectors ``u, v`` (buffers, so they are saved with the weights), refined by
    ``n_power_iterations`` steps per training evaluation. :meth:`finalize` rescales the
    weights by their exact spectral norms, after which the bound holds exactly, whatever
    the vectors.

    Parameters
    ----------
    n_features : int
        Dimension ``D`` of input and output.
    hidden_features : tuple of int, default=(32, 32)
        Widths of the hidden layers.
    lipschitz : float, default=0.9
        Bound ``c`` in ``(0, 1)`` on each layer's spectral norm.
    n_power_iterations : int, default=1
        Power iterations per training evaluation.
    activation : {'lipswish', 'elu'}, default='lipswish'
        ``u sigmoid(beta u) / 1.1`` with a learned ``beta > 0`` per layer (Chen et al.,
        2019), or ELU; both are 1-Lipschitz and continuously differentiable.
    """

    def __init__(self, n_features, hidden_features=(32, 32), lipschitz=0.9,
                 n_power_iterations=1, activation="lipswish"):
        super().__init__()
        _check_lipschitz(lipschitz)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        sizes = [int(n_features), *(int(h) for h in hidden_features), int(n_features)]
        if min(sizes) < 1:
            raise ValueError(f"hidden_features must be positive, got {hidden_features!r}.")
        self.lipschitz = float(lipschitz)
        self.n_power_iterations = int(n_power_iterations)
        self.activation = activation
        dtype = torch.float64
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(out, inp, dtype=dtype))
             for inp, out in zip(sizes[:-1], sizes[1:])])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(out, dtype=dtype)) for out in sizes[1:]])
        self.betas = nn.ParameterList(
            [nn.Parameter(torch.full((), _BETA_INIT, dtype=dtype))
             for _ in range(len(sizes) - 2)] if activation == "lipswish" else [])
        for layer, (inp, out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.register_buffer(f"left_{layer}", torch.full((out,), out ** -0.5,
                                                             dtype=dtype))
            self.register_buffer(f"right_{layer}", torch.full((inp,), inp ** -0.5,
                                                              dtype=dtype))

    def reset_parameters(self, generator, output_scale=0.1):
        """Random weights (nn.Linear's uniform rule) with the last layer scaled down by
        ``output_scale`` (``g`` starts small), zero biases, random power vectors."""
        with torch.no_grad():
            for layer, weight in enumerate(self.weights):
                bound = weight.shape[1] ** -0.5
                draw = torch.rand(weight.shape, generator=generator, dtype=weight.dtype,
                                  device=generator.device).to(weight.device)
                weight.copy_((2 * draw - 1) * bound)
                if layer == len(self.weights) - 1:
                    weight.mul_(output_scale)
                self.biases[layer].zero_()
                for name in (f"left_{layer}", f"right_{layer}"):
                    vector = getattr(self, name)
                    draw = torch.randn(vector.shape, generator=generator,
                                       dtype=vector.dtype, device=generator.device)
                    vector.copy_(F.normalize(draw.to(vector.device), dim=0))
            self._power_iterate(self.n_power_iterations + 10)

    @torch.no_grad()
    def _power_iterate(self, n_iterations):
        for layer, weight in enumerate(self.weights):
            left, right = getattr(self, f"left_{layer}"), getattr(self, f"right_{layer}")
            for _ in range(n_iterations):
                right.copy_(F.normalize(weight.T @ left, dim=0, eps=1e-30))
                left.copy_(F.normalize(weight @ right, dim=0, eps=1e-30))

    def state(self):
        """The :class:`MLPState` of the current weights.

        In training mode with gradients enabled, the power-iteration vectors are first
        refined (``n_power_iterations`` steps).
        """
        if (self.training and torch.is_grad_enabled() and self.n_power_iterations
                and not _transforms_active()):
            self._power_iterate(self.n_power_iterations)
        weights = []
        for layer, weight in enumerate(self.weights):
            left, right = getattr(self, f"left_{layer}"), getattr(self, f"right_{layer}")
            sigma = left @ weight @ right  # <= ||W||_2 for unit vectors
            weights.append(weight / (sigma.abs() / self.lipschitz).clamp_min(1.0))
        betas = tuple(F.softplus(beta) for beta in self.betas)
        return MLPState(tuple(weights), tuple(self.biases), betas, self.activation)

    @torch.no_grad()
    def finalize(self):
        """Rescale each weight by its exact spectral norm (when above ``c``), so that the
        layers provably satisfy ``||W||_2 <= c``; converge the power vectors."""
        for weight in self.weights:
            sigma = float(torch.linalg.matrix_norm(weight, ord=2))
            if sigma > self.lipschitz:
                weight.mul_(self.lipschitz / sigma)
        self._power_iterate(50)

    def spectral_norms(self):
        """Exact spectral norms of the normalized weights (what :meth:`state` uses)."""
        with torch.no_grad():
            return [float(torch.linalg.matrix_norm(w, ord=2)) for w in self.state().weights]

    def forward(self, h):
        return evaluate(self.state(), h)[0]


# Largest dimension for which Newton's method forms the D x D Jacobians of g.
NEWTON_MAX_FEATURES = 64


def solve_block(state, w, tol, max_iter, method="fixed_point"):
    """Solve ``z + g(z) = w`` for ``z``, row by row, without a graph.

    'fixed_point' iterates ``z <- w - g(z)``, a contraction of rate ``Lip(g) < 1``, so it
    converges from any start (linearly). 'newton' takes the step
    ``-(I + J_g(z))^{-1} r`` with the formed Jacobian (quadratic near the root) wherever
    it lowers the residual ``r = z + g(z) - w``, and the fixed-point step elsewhere.

    Parameters
    ----------
    state : MLPState
    w : torch.Tensor of shape (n, D)
    tol : float
        A row has converged when ``max |r| <= tol * (1 + max |w|)``.
    max_iter : int
    method : {'fixed_point', 'newton'}

    Returns
    -------
    z : torch.Tensor of shape (n, D)
    residual : torch.Tensor of shape (n,)
        ``max |z + g(z) - w|`` per row, relative to ``1 + max |w|``.
    """
    with torch.no_grad():
        w = w.detach()
        state = MLPState(tuple(t.detach() for t in state.weights),
                         tuple(t.detach() for t in state.biases),
                         tuple(t.detach() for t in state.betas), state.activation)
        scale = 1.0 + w.abs().amax(dim=1)
        z = w.clone()
        g, slopes = evaluate(state, z)
        residual = (z + g - w).abs().amax(dim=1) / scale
        for _ in range(max_iter):
            active = residual > tol
            if not bool(active.any()):
                break
            index = active.nonzero().squeeze(1)
            za, wa, scale_a = z[index], w[index], scale[index]
            slopes_a = [slope[index] for slope in slopes]
            step = za + g[index] - wa
            if method == "newton":
                eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
                matrix = eye + jacobian(state, slopes_a, index.numel())
                step = _linalg.solve(matrix, step.unsqueeze(-1)).squeeze(-1)
            candidate = za - step  # fixed point: z - (z + g(z) - w) = w - g(z)
            g_new, slopes_new = evaluate(state, candidate)
            r_new = (candidate + g_new - wa).abs().amax(dim=1) / scale_a
            if method == "newton":  # the fixed-point step where Newton does not help
                worse = ~(r_new < residual[index])
                if bool(worse.any()):
                    fixed = wa[worse] - g[index][worse]
                    g_fixed, slopes_fixed = evaluate(state, fixed)
                    candidate[worse], g_new[worse] = fixed, g_fixed
                    for new, other in zip(slopes_new, slopes_fixed):
                        new[worse] = other
                    r_new[worse] = (fixed + g_fixed - wa[worse]).abs().amax(
                        dim=1) / scale_a[worse]
            z[index], g[index], residual[index] = candidate, g_new, r_new
            for old, new in zip(slopes, slopes_new):
                old[index] = new
        return z, residual
