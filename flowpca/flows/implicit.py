"""Implicit normalizing flows (Lu et al., ICLR 2021).

``f = F_K o ... o F_1 o A`` with the affine whitening ``A`` of :mod:`.residual` and
implicit blocks: ``z = F(x)`` is defined by ``x + g_x(x) = z + g_z(z)`` with both ``g``
:class:`~flowpca.flows._spectral.LipschitzMLP` (``Lip < 1``), i.e.
``F = (I + g_z)^{-1} o (I + g_x)``. Forward and inverse are root finding; the gradient of
the root is implicit differentiation (an adjoint linear solve), never backpropagation
through the solver's iterations.
"""

import torch
from torch import nn

from .. import _linalg
from . import _spectral
from ._base import renamed_parameter
from .residual import ResidualFlow, _warn_not_converged, build_residual_like


def _method(n_features):
    return "newton" if n_features <= _spectral.NEWTON_MAX_FEATURES else "fixed_point"


class _ImplicitSolve(torch.autograd.Function):
    """``z`` with ``z + g(z) = w``; backward by the implicit function theorem.

    With ``r(z, w, theta) = z + g(z; theta) - w = 0``, ``dz = (I + J_g)^{-1} (dw -
    dg/dtheta dtheta)``, so for an upstream gradient ``a_bar`` the adjoint ``a`` solves
    ``(I + J_g(z))^T a = a_bar``; then ``grad_w = a`` and ``grad_theta = -a^T dg/dtheta``.
    """

    @staticmethod
    def forward(ctx, w, options, *tensors):
        template, tol, max_iter = options
        state = template.with_tensors(tensors)
        z, residual = _spectral.solve_block(state, w, tol, max_iter, _method(w.shape[1]))
        ctx.template = template
        ctx.save_for_backward(z, *tensors)
        ctx.mark_non_differentiable(residual)
        return z, residual

    @staticmethod
    def backward(ctx, grad_z, grad_residual):
        z, *tensors = ctx.saved_tensors
        n, D = z.shape
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
            state = ctx.template.with_tensors(inputs)
            g, slopes = _spectral.evaluate(state, z.detach())
            frozen = ctx.template.with_tensors([t.detach() for t in inputs])
            frozen_slopes = [s.detach() for s in slopes]
            if _method(D) == "newton":
                eye = torch.eye(D, dtype=z.dtype, device=z.device)
                matrix = eye + _spectral.jacobian(frozen, frozen_slopes, n)
                adjoint = _linalg.solve(matrix.transpose(1, 2), grad_z.unsqueeze(-1)
                                        ).squeeze(-1)
            else:  # a <- a_bar - J^T a, a contraction of rate Lip(g)
                adjoint = grad_z.clone()
                for _ in range(1000):
                    update = grad_z - _spectral.pull(frozen, frozen_slopes,
                                                     adjoint.unsqueeze(1)).squeeze(1)
                    done = (update - adjoint).abs().max() <= 1e-12 * (
                        1 + grad_z.abs().max())
                    adjoint = update
                    if bool(done):
                        break
            wanted = [t for t in inputs if t.requires_grad]
            grads = iter(torch.autograd.grad(g, wanted, -adjoint, allow_unused=True)
                         if wanted else ())
            tensor_grads = [next(grads) if t.requires_grad else None for t in inputs]
        return (adjoint, None, *tensor_grads)


class _ImplicitBlock(nn.Module):
    """The pair ``(g_x, g_z)`` of one implicit block."""

    def __init__(self, make_g):
        super().__init__()
        self.g_x = make_g()
        self.g_z = make_g()


class ImplicitFlow(ResidualFlow):
    """Implicit flow ``y = F_K(... F_1(W x + b))``, ``x + g_x(x) = F(x) + g_z(F(x))``.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    n_layers : int, default=8
        Number of implicit blocks ``K`` (``n_blocks`` before flowpca 0.2, deprecated).
    hidden_features, lipschitz, n_power_iterations, activation
        Of every ``g_x`` and ``g_z``, as in :class:`~flowpca.flows.residual.ResidualFlow`.
    exact_logdet_max_features, eval_exact_logdet_max_features, n_exact_terms, geometric_p
        ``log|det J_F| = log|det(I + J_{g_x}(x))| - log|det(I + J_{g_z}(z))|``: each term
        exact or by the power-series estimator, as in
        :class:`~flowpca.flows.residual.ResidualFlow`.
    inverse_tol : float, default=1e-10
        Relative residual at which the root finding of a block stops (both directions).
    inverse_max_iter : int, default=500
        Iterations at most per block; rows that do not converge are reported in a
        :class:`~sklearn.exceptions.ConvergenceWarning`.
    seed : int, default=0
        Seed of the estimator's probes when no generator is given.

    Attributes
    ----------
    weight, bias : torch.nn.Parameter
        The affine map ``A``.
    blocks : torch.nn.ModuleList
        Each with the modules ``g_x`` and ``g_z``.

    Notes
    -----
    Root finding solves ``z + g(z) = w``: for ``D <= 64`` by Newton's method with the
    formed Jacobians (falling back to the fixed-point step ``z <- w - g(z)`` where Newton
    does not lower the residual), above by fixed-point iteration, which converges from
    any start since ``Lip(g) < 1``. The gradient of the root comes from one adjoint
    solve ``(I + J_{g_z}(z))^T a = a_bar`` (dense for ``D <= 64``, fixed-point above).

    Jacobian products (:meth:`jvp`, the penalty, local components) solve
    ``(I + J_{g_z}(z)) u = (I + J_{g_x}(x)) v`` with the formed ``D x D`` Jacobian of each
    block: memory ``n D^2`` per block, so this family suits up to a few hundred features.

    References
    ----------
    C. Lu, J. Chen, C. Li, Q. Wang, J. Zhu, "Implicit Normalizing Flows", ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from flowpca.flows import ImplicitFlow
    >>> X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
    ...                 dtype=torch.float64)
    >>> flow = ImplicitFlow.from_data(X, alpha=1e-3, n_layers=2, hidden_features=(8,),
    ...                               generator=torch.Generator().manual_seed(0))
    >>> y, log_abs_det = flow(X)
    >>> y.shape, log_abs_det.shape
    (torch.Size([20, 3]), torch.Size([20]))
    >>> bool((flow.inverse(y) - X).abs().max() < 1e-8)
    True
    """

    def _make_block(self):
        return _ImplicitBlock(self._make_g)

    def __init__(self, n_features, n_layers=8, *, n_blocks=None, **kwargs):
        super().__init__(n_features, n_layers=0, **kwargs)
        if n_blocks is not None:
            n_layers = renamed_parameter("n_blocks", "n_layers", n_blocks)
        self.n_layers = int(n_layers)
        self.blocks = nn.ModuleList([self._make_block() for _ in range(self.n_layers)])

    def _g_modules(self):
        return [g for block in self.blocks for g in (block.g_x, block.g_z)]

    def _pass(self, x, tangents=None, identity=False, log_det=True, generator=None):
        h, T = self._affine(x, tangents, identity)
        exact = self._exact_log_det()
        if log_det and not exact:
            generator = self._series_generator(generator)
        log_abs_det = _linalg.slogdet(self.weight)[1].expand(x.shape[0]) if log_det else None
        eye = torch.eye(self.n_features, dtype=x.dtype, device=x.device)
        worst = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for block in self.blocks:
            state_x = block.g_x.state()
            out_x, slopes_x = _spectral.evaluate(state_x, h)
            state_z = block.g_z.state()
            z, residual = _ImplicitSolve.apply(
                h + out_x, (state_z, self.inverse_tol, self.inverse_max_iter),
                *state_z.tensors())
            worst = torch.maximum(worst, residual)
            slopes_z = _spectral.evaluate(state_z, z)[1]  # with the implicit graph of z
            jacobian_x = jacobian_z = None
            if log_det:
                log_det_x, jacobian_x = self._block_log_det(state_x, slopes_x, h, exact,
                                                            generator)
                log_det_z, jacobian_z = self._block_log_det(state_z, slopes_z, z, exact,
                                                            generator)
                log_abs_det = log_abs_det + log_det_x - log_det_z
            if T is not None:
                if jacobian_z is None:
                    jacobian_z = _spectral.jacobian(state_z, slopes_z, z.shape[0])
                B = T + (T @ jacobian_x.transpose(1, 2) if jacobian_x is not None
                         else _spectral.push(state_x, slopes_x, T))
                T = _linalg.solve(eye + jacobian_z, B.transpose(1, 2)).transpose(1, 2)
            h = z
        _warn_not_converged("ImplicitFlow.forward", worst, self.inverse_tol,
                            self.inverse_max_iter)
        return h, log_abs_det, T

    def inverse(self, y):
        # Invert block by block: ``w = z + g_z(z)``, then the root ``x`` of ``x + g_x(x)
        # = w``; then ``A``. No graph is kept.
        with torch.no_grad():
            h = y.detach()
            worst = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
            for block in reversed(self.blocks):
                w = h + block.g_z(h)
                h, residual = _spectral.solve_block(block.g_x.state(), w, self.inverse_tol,
                                                    self.inverse_max_iter,
                                                    _method(self.n_features))
                worst = torch.maximum(worst, residual)
            _warn_not_converged("ImplicitFlow.inverse", worst, self.inverse_tol,
                                self.inverse_max_iter)
            return _linalg.solve(self.weight, (h - self.bias).T).T


def build_implicit(X, settings):
    """``flow='implicit'``: :meth:`ImplicitFlow.from_data` with ``n_layers`` blocks.

    ``flow_params`` are those of ``flow='residual'`` (see
    :func:`flowpca.flows.residual.build_residual`), applying to both ``g_x`` and ``g_z``
    of every block; ``inverse_tol`` and ``inverse_max_iter`` bound the root finding in
    both directions.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data; its dtype and device are the flow's.
    settings : FlowSettings
        The estimator's settings (:class:`flowpca.flows._families.FlowSettings`).

    Returns
    -------
    flow : ImplicitFlow

    """
    return build_residual_like(ImplicitFlow, "implicit", X, settings)
