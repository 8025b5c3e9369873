"""Tests of the invertible MLP flow against autograd (float64, small sizes)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flowpca import _linalg
from flowpca.flows import Flow, MLPFlow
from flowpca.flows import mlp as mlp_module

ACTIVATIONS = ["asinh", "leaky_softplus"]


def generator(seed):
    return torch.Generator().manual_seed(seed)


def random_flow(n_features, n_layers, activation="asinh", scale=1.0, seed=0):
    """A flow with random, well-conditioned layers: ``W = scale * Q diag(d)``, d in [0.5, 2]."""
    gen = generator(seed)
    flow = MLPFlow(n_features, n_layers=n_layers, activation=activation)
    with torch.no_grad():
        for weight, bias in zip(flow.weights, flow.biases):
            gaussian = torch.randn(n_features, n_features, generator=gen, dtype=torch.float64)
            q, _ = torch.linalg.qr(gaussian)
            d = 0.5 + 1.5 * torch.rand(n_features, generator=gen, dtype=torch.float64)
            weight.copy_(scale * q * d)
            bias.copy_(0.5 * torch.randn(n_features, generator=gen, dtype=torch.float64))
    return flow


def random_x(n_samples, n_features, seed=1, scale=1.5):
    return scale * torch.randn(n_samples, n_features, generator=generator(seed),
                               dtype=torch.float64)


def autograd_jacobian(flow, x):
    def single(row):
        return flow._map(row.unsqueeze(0)).squeeze(0)
    return torch.func.vmap(torch.func.jacrev(single))(x)


def test_is_a_flow():
    flow = MLPFlow(3)
    assert isinstance(flow, Flow)
    assert len(flow.weights) == len(flow.biases) == 9
    assert all(w.dtype == torch.float64 for w in flow.parameters())


@settings(max_examples=25, deadline=None)
@given(n_features=st.integers(1, 8), n_layers=st.integers(1, 4),
       scale=st.floats(0.2, 3.0), activation=st.sampled_from(ACTIVATIONS),
       seed=st.integers(0, 2**31 - 1))
def test_log_abs_det_matches_autograd(n_features, n_layers, scale, activation, seed):
    flow = random_flow(n_features, n_layers, activation, scale, seed)
    x = random_x(6, n_features, seed + 1)
    with torch.no_grad():
        y, log_abs_det = flow(x)
    jacobian = autograd_jacobian(flow, x)
    torch.testing.assert_close(y, flow._map(x).detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(log_abs_det, _linalg.slogdet(jacobian)[1].detach(),
                               rtol=0, atol=1e-10)


def test_one_slogdet_per_layer_whatever_the_batch(monkeypatch):
    flow = random_flow(4, 3)
    shapes = []
    slogdet = _linalg.slogdet

    def counting_slogdet(A):
        shapes.append(tuple(A.shape))
        return slogdet(A)

    monkeypatch.setattr(mlp_module._linalg, "slogdet", counting_slogdet)
    flow(random_x(50, 4))
    flow.forward_and_frobenius_sq(random_x(20, 4), "hutchinson", 2, generator(0))
    assert shapes == [(4, 4, 4), (4, 4, 4)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_jacobian_and_jvp_match_autograd(activation):
    flow = random_flow(5, 3, activation, seed=3)
    x = random_x(7, 5)
    v = random_x(7, 5, seed=2)
    expected = autograd_jacobian(flow, x).detach()
    with torch.no_grad():
        torch.testing.assert_close(flow.jacobian(x), expected, rtol=0, atol=1e-10)
        y, jv = flow.jvp(x, v)
        torch.testing.assert_close(y, flow(x)[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(jv, torch.einsum("nij,nj->ni", expected, v),
                                   rtol=0, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(n_features=st.integers(1, 6), n_layers=st.integers(0, 4),
       activation=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**31 - 1))
def test_inverse_round_trip(n_features, n_layers, activation, seed):
    flow = random_flow(n_features, n_layers, activation, seed=seed)
    x = random_x(10, n_features, seed + 1)
    with torch.no_grad():
        torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=0, atol=1e-8)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_inverse_jvp_inverts_jvp(activation):
    flow = random_flow(5, 3, activation, seed=4)
    x, v = random_x(8, 5), random_x(8, 5, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(flow.inverse_jvp(x, flow.jvp(x, v)[1]), v,
                                   rtol=0, atol=1e-10)
        torch.testing.assert_close(flow.jvp(x, flow.inverse_jvp(x, v))[1], v,
                                   rtol=0, atol=1e-10)


def test_leaky_softplus_inverse_newton():
    sigma = mlp_module._ACTIVATIONS["leaky_softplus"]
    u = torch.cat([torch.linspace(-500, 500, 2001, dtype=torch.float64),
                   torch.tensor([-1e6, 1e6, 0.0, 1e-300], dtype=torch.float64)])
    torch.testing.assert_close(sigma.inverse(sigma(u)), u, rtol=1e-12, atol=1e-12)
    # The differentiable last Newton step carries the implicit gradient 1 / sigma'(u).
    h = sigma(torch.linspace(-5, 5, 11, dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(sigma.inverse(h).sum(), h)
    torch.testing.assert_close(grad, 1 / sigma.derivative(sigma.inverse(h).detach()))


def test_asinh_formula_matches_torch():
    u = torch.cat([torch.linspace(-50, 50, 10001, dtype=torch.float64),
                   torch.logspace(-300, 150, 200, dtype=torch.float64)])
    torch.testing.assert_close(mlp_module._asinh(u), torch.asinh(u), rtol=1e-15, atol=0)
    torch.testing.assert_close(mlp_module._asinh(-u), torch.asinh(-u), rtol=1e-15, atol=0)
    big = torch.tensor([1e300, -1e300], dtype=torch.float64)
    assert torch.isfinite(mlp_module._asinh(big)).all()


def test_fast_asinh_path_matches_torch_asinh():
    # Batches of >= 4096 elements take the vectorized asinh and its custom autograd
    # nodes; small chunks of the same batch take torch.asinh. Values and parameter
    # gradients must agree.
    flow = random_flow(64, 2, seed=6)
    x = random_x(80, 64, scale=1.0)
    probes = torch.randn((80, 1, 64), generator=generator(0), dtype=torch.float64)

    def loss(rows):
        y, log_abs_det, z, _ = flow._pass(x[rows], tangents=probes[rows])
        return y.pow(2).sum() + log_abs_det.sum() + z.pow(2).sum() + flow._map(x[rows]).sum()

    full = loss(slice(None))
    full_grads = torch.autograd.grad(full, list(flow.parameters()))
    chunks = sum(loss(slice(i, i + 8)) for i in range(0, 80, 8))
    chunk_grads = torch.autograd.grad(chunks, list(flow.parameters()))
    torch.testing.assert_close(full, chunks, rtol=1e-13, atol=0)
    for got, expected in zip(full_grads, chunk_grads):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_exact_frobenius_and_fused_pass(activation):
    flow = random_flow(4, 3, activation, seed=7)
    x = random_x(9, 4)
    frobenius_sq = flow.frobenius_sq(x, method="exact")
    torch.testing.assert_close(frobenius_sq,
                               autograd_jacobian(flow, x).pow(2).sum(dim=(1, 2)),
                               rtol=0, atol=1e-10)
    y, log_abs_det = flow(x)
    fused = flow.forward_and_frobenius_sq(x, method="exact")
    for got, expected in zip(fused, (y, log_abs_det, frobenius_sq)):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_hutchinson_matches_separate_with_same_seed(activation):
    flow = random_flow(4, 3, activation, seed=8)
    x = random_x(9, 4)
    separate = flow.frobenius_sq(x, "hutchinson", n_probes=3, generator=generator(11))
    y, log_abs_det, fused = flow.forward_and_frobenius_sq(x, "hutchinson", 3, generator(11))
    torch.testing.assert_close(fused, separate, rtol=0, atol=1e-12)
    torch.testing.assert_close(y, flow(x)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(log_abs_det, flow(x)[1], rtol=0, atol=1e-12)
    other = flow.frobenius_sq(x, "hutchinson", n_probes=3, generator=generator(12))
    assert not torch.allclose(other, separate)


def test_hutchinson_is_unbiased():
    # Each of 4000 copies of a row gets its own probe, so the per-copy estimates are
    # i.i.d. samples of ||J eps||^2: their mean must be within 4 standard errors of
    # the exact norm (seeded, so the test is deterministic; P(fail) ~ 1e-4 per row).
    flow = random_flow(4, 3, seed=9)
    x = random_x(3, 4)
    n_copies = 4000
    samples = flow.frobenius_sq(x.repeat_interleave(n_copies, dim=0), "hutchinson",
                                n_probes=1, generator=generator(13)).detach()
    samples = samples.reshape(3, n_copies)
    exact = flow.frobenius_sq(x, "exact").detach()
    standard_error = samples.std(dim=1) / math.sqrt(n_copies)
    assert ((samples.mean(dim=1) - exact).abs() <= 4 * standard_error).all()
    # With many probes per row the averaged estimate is close as well.
    averaged = flow.frobenius_sq(x, "hutchinson", n_probes=n_copies, generator=generator(14))
    assert ((averaged.detach() - exact).abs() <= 4 * standard_error).all()


def test_hutchinson_needs_a_generator_and_leaves_global_rng_alone():
    flow = random_flow(3, 2)
    x = random_x(5, 3)
    state = torch.get_rng_state()
    flow.forward_and_frobenius_sq(x, "hutchinson", 2, generator(0))
    MLPFlow.from_data(x - x.mean(dim=0), 1e-3, n_layers=2, generator=generator(0))
    MLPFlow.from_data(x - x.mean(dim=0), 1e-3, n_layers=2)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="Generator"):
        flow.frobenius_sq(x, "hutchinson")
    with pytest.raises(ValueError, match="method"):
        flow.frobenius_sq(x, "lanczos")


class _Fused(nn.Module):
    def __init__(self, flow, method):
        super().__init__()
        self.flow = flow
        self.method = method

    def forward(self, x):
        return self.flow.forward_and_frobenius_sq(x, self.method, 2, generator(5))


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_gradients_pass_gradcheck(method, activation):
    module = _Fused(random_flow(2, 2, activation, seed=10), method)
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    x = random_x(3, 2).requires_grad_()

    def fn(x, *params):
        return torch.func.functional_call(module, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params))


def test_get_config_round_trip():
    flow = random_flow(3, 2, "leaky_softplus", seed=11)
    config = flow.get_config()
    assert config == {"n_features": 3, "n_layers": 2, "activation": "leaky_softplus"}
    rebuilt = MLPFlow(**config)
    rebuilt.load_state_dict(flow.state_dict())
    x = random_x(5, 3)
    with torch.no_grad():
        for got, expected in zip(rebuilt(x), flow(x)):
            assert torch.equal(got, expected)
        assert torch.equal(rebuilt.inverse(x), flow.inverse(x))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="activation"):
        MLPFlow(3, activation="relu")
    with pytest.raises(ValueError, match="n_layers"):
        MLPFlow(3, n_layers=-1)


def test_no_hidden_layer_is_affine():
    flow = random_flow(3, 0, seed=12)
    x = random_x(4, 3)
    y, log_abs_det = flow(x)
    torch.testing.assert_close(y, x @ flow.weights[0].T + flow.biases[0])
    torch.testing.assert_close(log_abs_det, _linalg.slogdet(flow.weights[0])[1].expand(4))
    torch.testing.assert_close(flow.jacobian(x), flow.weights[0].expand(4, 3, 3))


def anisotropic_data(n_samples=500, seed=0):
    gen = generator(seed)
    z = torch.randn(n_samples, 3, generator=gen, dtype=torch.float64)
    X = torch.stack([2 * z[:, 0], 0.5 * z[:, 1] + 0.3 * z[:, 0], torch.sin(2 * z[:, 0])
                     + 0.1 * z[:, 2]], dim=1)
    return X - X.mean(dim=0)


def test_from_data_first_layer_whitens():
    X = anisotropic_data()
    alpha = 1e-3
    covariance = X.T @ X / X.shape[0] + alpha * torch.eye(3, dtype=torch.float64)
    # Without hidden layers the flow is the linear flow's optimum W^T W = (S + alpha I)^-1.
    linear = MLPFlow.from_data(X, alpha, n_layers=0, generator=generator(0))
    W = linear.weights[0].detach()
    torch.testing.assert_close(W.T @ W, torch.linalg.inv(covariance), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(linear.biases[0].detach(), torch.zeros(3, dtype=torch.float64))
    y = linear(X)[0].detach()
    torch.testing.assert_close(W @ covariance @ W.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(y.T @ y / X.shape[0],
                               torch.eye(3, dtype=torch.float64), rtol=0, atol=5e-3)
    # With hidden layers the first layer is the same whitening, scaled by hidden_scale.
    flow = MLPFlow.from_data(X, alpha, n_layers=3, generator=generator(0), hidden_scale=0.5)
    torch.testing.assert_close(flow.weights[0].detach(), 0.5 * W)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_from_data_output_is_standardized(activation):
    X = anisotropic_data()
    flow = MLPFlow.from_data(X, 1e-3, n_layers=4, activation=activation,
                             generator=generator(0))
    y = flow(X)[0].detach()
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(3, dtype=torch.float64),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(y.std(dim=0, correction=0), torch.ones(3, dtype=torch.float64),
                               rtol=0, atol=1e-10)


def test_from_data_is_deterministic_given_the_generator():
    X = anisotropic_data()
    first = MLPFlow.from_data(X, 1e-3, n_layers=3, generator=generator(42)).state_dict()
    again = MLPFlow.from_data(X, 1e-3, n_layers=3, generator=generator(42)).state_dict()
    other = MLPFlow.from_data(X, 1e-3, n_layers=3, generator=generator(43)).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["weights.1"], other["weights.1"])


def test_from_data_follows_dtype_and_float32_runs():
    X = anisotropic_data().to(torch.float32)
    flow = MLPFlow.from_data(X, 1e-3, n_layers=2, generator=generator(0))
    assert all(p.dtype == torch.float32 for p in flow.parameters())
    y, log_abs_det, frobenius_sq = flow.forward_and_frobenius_sq(
        X, "hutchinson", 1, generator(0))
    assert y.dtype == log_abs_det.dtype == frobenius_sq.dtype == torch.float32
    torch.testing.assert_close(flow.inverse(y), X, rtol=0, atol=1e-4)


def test_training_step_lowers_the_penalized_nll():
    from flowpca.density import penalized_nll
    X = anisotropic_data()
    flow = MLPFlow.from_data(X, 1e-3, n_layers=4, generator=generator(0))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    gen = generator(1)
    start = penalized_nll(flow, X, 1e-3).item()
    for _ in range(30):
        optimizer.zero_grad()
        penalized_nll(flow, X, 1e-3, penalty="hutchinson", generator=gen).backward()
        optimizer.step()
    assert penalized_nll(flow, X, 1e-3).item() < start - 0.1
