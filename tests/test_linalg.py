"""flowpca._linalg: LU-based linear algebra that stays correct with several CPU threads.

torch 2.13's batched CPU LU is wrong, raises or hangs with more than one intra-op thread
for batches of matrices of size n >= ~150 (docs/contributing.rst, "Known hazards"). The
tests that exercise
that regime run in a subprocess with a timeout (a regression hangs rather than fails) and
set the thread count there, so that this process's thread count is never touched.
"""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import flowpca
from flowpca import _linalg

# Import of torch in the child (~2 s) plus the work (seconds); a hang in a batched LU
# call is what the limit catches. It is generous because two intra-op threads on a
# loaded two-core machine were measured 20-50x slower than one (OpenMP oversubscription).
_SUBPROCESS_TIMEOUT = 300


def _run_python(code, timeout=_SUBPROCESS_TIMEOUT):
    """Run ``code`` in a fresh interpreter; fail (not hang) on a timeout or an error."""
    try:
        completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                                   capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"subprocess hung (> {timeout} s): {error.stderr!r}")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


# ---------------------------------------------------------------- the regime that breaks
def test_batched_lu_ops_match_numpy_with_two_threads():
    # Well-conditioned matrices with moderate determinants (eigenvalues near 1, so float32
    # neither overflows nor underflows det), with rows permuted so that partial pivoting
    # has work to do. float64 is checked to 1e-9 relative; float32 to 1e-4 relative (a
    # few hundred ulps of float32: LU of 256 x 256 accumulates that much rounding).
    code = """
        import numpy as np
        import torch
        torch.set_num_threads(2)
        from flowpca import _linalg

        rng = np.random.RandomState(0)
        n_batch, n = 8, 256
        A = np.stack([(np.eye(n) + rng.normal(size=(n, n)) / (2 * np.sqrt(n)))[rng.permutation(n)]
                      for _ in range(n_batch)])
        B = rng.normal(size=(n_batch, n, 3))

        def rel(actual, expected):
            actual = actual.detach().double().numpy()
            return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))

        for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
            A_t = torch.tensor(A, dtype=dtype, requires_grad=True)
            B_t = torch.tensor(B, dtype=dtype)
            A_ref = A_t.detach().double().numpy()  # the same (rounded) matrices
            B_ref = B_t.double().numpy()
            sign_ref, logdet_ref = np.linalg.slogdet(A_ref)

            sign, logdet = _linalg.slogdet(A_t)
            assert torch.equal(sign, torch.as_tensor(sign_ref, dtype=dtype)), (dtype, sign)
            # log|det| is O(1) nats here: compare it absolutely, at the same tolerance.
            assert np.max(np.abs(logdet.detach().double().numpy() - logdet_ref)) < rtol, dtype
            logdet.sum().backward()  # d log|det A| / dA = A^-T
            A_inv = np.linalg.inv(A_ref)
            assert rel(A_t.grad, A_inv.transpose(0, 2, 1)) < rtol, ("slogdet backward", dtype)
            np.testing.assert_allclose(_linalg.det(A_t).detach().double().numpy(),
                                       np.linalg.det(A_ref), rtol=rtol)
            assert rel(_linalg.inv(A_t), A_inv) < rtol, ("inv", dtype)
            assert rel(_linalg.solve(A_t, B_t), np.linalg.solve(A_ref, B_ref)) < rtol, dtype
            LU, pivots = _linalg.lu_factor(A_t)
            assert rel(_linalg.lu_solve(LU, pivots, B_t),
                       np.linalg.solve(A_ref, B_ref)) < rtol, ("lu", dtype)
            assert rel(_linalg.lu_solve(LU, pivots, B_t, adjoint=True),
                       np.linalg.solve(A_ref.transpose(0, 2, 1), B_ref)) < rtol, ("lu^T", dtype)
        assert torch.get_num_threads() == 2
        print("ok")
    """
    assert _run_python(code).strip().endswith("ok")


def test_mlp_model_same_with_one_and_two_threads():
    # 160 features: the MLP flow's per-layer slogdet (a batch of 3 matrices, forward and
    # backward during training) and the default inverse_jvp fall in the broken regime.
    code = """
        import warnings
        import numpy as np
        import torch
        torch.set_num_threads(2)
        from flowpca import NormalizingFlowPCA

        X = np.random.RandomState(0).normal(size=(300, 160)) @ np.diag(np.linspace(2, 0.5, 160))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: two epochs only
            model = NormalizingFlowPCA(n_layers=2, max_iter=2, random_state=0).fit(X)

        names = ("score_samples", "transform", "sample", "inverse_transform",
                 "local_variances", "local_directions", "local_covariance")

        def outputs():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # inverse_transform: 1 iteration only
                # (its Levenberg-Marquardt steps solve a batch of 160 x 160 systems)
                back = model.set_params(inverse_max_iter=1).inverse_transform(
                    model.transform(X[:2]))
            return (model.score_samples(X), model.transform(X[:100]),
                    model.sample(50, random_state=0), back, model.local_variances(X[:20]),
                    model.local_directions(X[:20]), model.local_covariance(X[:20]))

        two_threads = outputs()
        torch.set_num_threads(1)
        one_thread = outputs()
        for name, a, b in zip(names, two_threads, one_thread):
            assert np.all(np.isfinite(a)), name
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max(), err_msg=name)
        print("ok")
    """
    assert _run_python(code).strip().endswith("ok")


# ---------------------------------------------------------------- the loop path, in-process
@pytest.fixture
def always_loop(monkeypatch):
    """Force the 2-D loop path whatever the size and thread count."""
    monkeypatch.setattr(_linalg, "batched_lu_is_safe", lambda A: A.ndim <= 2)


def _spd_batch(shape, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    G = torch.randn(*shape, n, n, generator=generator, dtype=torch.float64)
    return torch.eye(n, dtype=torch.float64) + G / (2 * n**0.5)


@pytest.mark.parametrize("a_batch, b_shape", [
    ((2, 3), (2, 3, 5, 4)), ((2, 3), (3, 5, 4)), ((2, 3), (5, 4)), ((2, 3), (1, 5, 4)),
    ((3,), (2, 3, 5, 4)),   # B's batch larger than A's
    ((2, 1), (2, 3, 5, 4)),
    ((2, 3), (2, 3, 5)),    # a batch of vectors
    ((2, 3), (5,)),
])
def test_loop_solve_broadcasts_like_torch(always_loop, a_batch, b_shape):
    A = _spd_batch(a_batch, 5)
    B = torch.randn(*b_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.linalg.solve(A, B)
    actual = _linalg.solve(A, B)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_loop_ops_match_torch_values_types_and_gradients(always_loop):
    A = _spd_batch((2, 3), 6)
    A_loop = A.clone().requires_grad_(True)
    A_torch = A.clone().requires_grad_(True)
    B = torch.randn(3, 6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    result = _linalg.slogdet(A_loop)
    assert isinstance(result, type(torch.linalg.slogdet(A)))
    reference = torch.linalg.slogdet(A_torch)
    torch.testing.assert_close(result.sign, reference.sign)
    torch.testing.assert_close(result.logabsdet, reference.logabsdet)
    # One backward through everything: slogdet, det, inv, solve and lu_factor/lu_solve.
    LU, pivots = _linalg.lu_factor(A_loop)
    LU_ref, pivots_ref = torch.linalg.lu_factor(A_torch)
    assert torch.equal(pivots, pivots_ref)
    losses = []
    for module, M, lu, piv in ((_linalg, A_loop, LU, pivots),
                               (torch.linalg, A_torch, LU_ref, pivots_ref)):
        losses.append(module.slogdet(M)[1].sum() + module.det(M).sum()
                      + module.inv(M).pow(2).sum() + module.solve(M, B).sum()
                      + module.lu_solve(lu, piv, B).pow(2).sum())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(A_loop.grad, A_torch.grad, rtol=1e-10, atol=1e-12)


def test_small_and_single_matrices_use_torch_directly():
    big = _spd_batch((), 200)
    assert _linalg.batched_lu_is_safe(big)  # 2-D
    assert _linalg.batched_lu_is_safe(big.unsqueeze(0))  # a batch of one
    assert _linalg.batched_lu_is_safe(_spd_batch((10,), _linalg._SAFE_BATCHED_LU_MAX_N))
    unsafe = _linalg.batched_lu_is_safe(big.expand(2, 200, 200))
    assert unsafe == (torch.get_num_threads() == 1)


# ---------------------------------------------------------------- nothing bypasses _linalg
_LU_CALL = re.compile(
    r"torch\.linalg\.(slogdet|solve|solve_ex|inv|inv_ex|det|lu_factor|lu_factor_ex|lu_solve"
    r"|lu|ldl_factor|ldl_factor_ex|ldl_solve)\b"
    r"|torch\.(slogdet|logdet|det|inverse|lu|lu_solve|linalg_solve)\s*\("
    r"|\.(slogdet|logdet|det|inverse|lu|lu_solve)\(\s*\)")


def _flowpca_sources():
    root = pathlib.Path(flowpca.__file__).parent
    return [path for path in sorted(root.rglob("*.py")) if path.name != "_linalg.py"]


def test_lu_based_torch_calls_only_in_linalg_module():
    offenders = []
    for path in _flowpca_sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _LU_CALL.search(code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "LU-based torch calls outside flowpca/_linalg.py:\n" + "\n".join(
        offenders)
    assert len(_flowpca_sources()) > 5


@pytest.mark.parametrize("line, flagged", [
    ("s, l = torch.linalg.slogdet(W)", True),
    ("x = torch.linalg.solve(A, b)", True),
    ("inv, info = torch.linalg.inv_ex(A)", True),
    ("y = torch.inverse(A)", True),
    ("y = W.inverse()", True),
    ("d = torch.logdet(W)", True),
    ("x = flow.inverse(y)", False),       # flows' own inverse method
    ("x = self._sigma.inverse(h)", False),
    ("q, r = torch.linalg.qr(G)", False),
    ("U, s, Vh = torch.linalg.svd(J)", False),
    ("x = _linalg.solve(A, b)", False),
])
def test_lu_call_pattern(line, flagged):
    assert bool(_LU_CALL.search(line)) is flagged
