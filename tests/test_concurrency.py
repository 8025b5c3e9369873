"""A fitted model is safe to share between threads: inference keeps no mutable state, so
concurrent calls give exactly the sequential results."""

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning

from flowpca import NormalizingFlowPCA

from .conftest import anisotropic_gaussian

_N_THREADS = 8
_N_TASKS = 32


@pytest.fixture(scope="module")
def data():
    return anisotropic_gaussian(600, 6, seed=0)


@pytest.fixture(scope="module", params=[
    dict(flow="linear"),
    dict(flow="mlp", n_layers=2, max_iter=3),
    dict(flow="mlp", n_layers=2, max_iter=3, n_components=2, svd_solver="randomized"),
], ids=["linear", "mlp", "mlp-randomized"])
def model(request, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return NormalizingFlowPCA(random_state=0, **request.param).fit(data[:300])


def _tasks(data):
    # Different rows per task (so that a result landing in the wrong call would show),
    # some of them big enough for several chunks at the working memory set below.
    rng = np.random.RandomState(1)
    return [data[rng.choice(len(data), size=int(rng.randint(1, 200)))]
            for _ in range(_N_TASKS)]


def _infer(model, X):
    # Small chunks: each call runs a few rounds of chunked work (config is thread-local).
    with sklearn.config_context(working_memory=1):
        return model.score_samples(X), model.transform(X), model.score(X)


def test_concurrent_inference_equals_sequential(model, data):
    tasks = _tasks(data)
    sequential = [_infer(model, X) for X in tasks]
    with ThreadPoolExecutor(max_workers=_N_THREADS) as pool:
        concurrent = list(pool.map(lambda X: _infer(model, X), tasks * 2))
    for index, (got, expected) in enumerate(zip(concurrent, sequential * 2)):
        for name, a, b in zip(("score_samples", "transform", "score"), got, expected):
            assert np.array_equal(a, b), f"task {index}: {name} differs"


def test_concurrent_sampling_with_seeds_equals_sequential(model):
    seeds = list(range(_N_TASKS))
    sequential = [model.sample(50, random_state=seed) for seed in seeds]
    with ThreadPoolExecutor(max_workers=_N_THREADS) as pool:
        concurrent = list(pool.map(lambda seed: model.sample(50, random_state=seed), seeds))
    for seed, (a, b) in enumerate(zip(concurrent, sequential)):
        assert np.array_equal(a, b), f"seed {seed}"


def test_concurrent_inference_leaves_the_model_unchanged(model, data):
    state = {name: value.clone() for name, value in model.flow_.state_dict().items()}
    attributes = {name: getattr(model, name) for name in vars(model) if name.endswith("_")}
    with ThreadPoolExecutor(max_workers=_N_THREADS) as pool:
        list(pool.map(lambda X: _infer(model, X), _tasks(data)))
    for name, value in model.flow_.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not model.flow_.training
    assert all(not p.requires_grad for p in model.flow_.parameters())
    for name, value in attributes.items():
        assert getattr(model, name) is value, name
