"""Quality of flow='nsf' (issue #12): held-out log-likelihood against a plain zuko NSF
trained by a plain Adam loop and against the Gaussian mixture with the best BIC, and the
order of the local variances against the MLP flow's.

Each test trains for seconds to tens of seconds with one torch thread. The tolerances
are set from the seed-to-seed spread measured on 3 data / model seeds (numbers in the
tests' comments; 2026-11-25, flowpca 0.1.0.dev0, torch 2.13.0+cpu, zuko 1.6.0).
"""

import numpy as np
import pytest
import torch
import zuko
from sklearn.datasets import make_s_curve
from sklearn.mixture import GaussianMixture

from flowpca import NormalizingFlowPCA

from .conftest import PAPER_TRAINING

pytestmark = pytest.mark.slow


def sine(n_samples, seed):
    rng = np.random.RandomState(seed)
    x1 = rng.uniform(-3, 3, n_samples)
    return np.c_[x1, np.sin(x1) + 0.1 * rng.normal(size=n_samples)]


def plain_zuko_nsf_score(X_train, X_test, seed, transforms=3, epochs=100, lr=1e-3,
                         batch_size=200):
    """Mean held-out log-likelihood (nats per sample, data units) of zuko's NSF of the
    estimator's size (``transforms`` spline couplings, hidden (64, 64), 8 bins) trained
    by a plain Adam loop, as in zuko's tutorial, on the standardized data."""
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    x_train = torch.tensor((X_train - mean) / std)
    x_test = torch.tensor((X_test - mean) / std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = zuko.flows.NSF(X_train.shape[1], transforms=transforms, passes=2, bins=8,
                              hidden_features=(64, 64)).double()
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(x_train), batch_size):
            loss = -flow().log_prob(x_train[order[start:start + batch_size]]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return flow().log_prob(x_test).mean().item() - np.log(std).sum()


def estimator_nsf_score(X_train, X_test):
    """Held-out score of ``flow='nsf'`` with the estimator's defaults but 3 layers, 200
    epochs at most and early stopping."""
    with pytest.warns(Warning):  # max_iter reached
        model = NormalizingFlowPCA(flow="nsf", n_layers=3, max_iter=200, early_stopping=True,
                                   random_state=0, **PAPER_TRAINING).fit(X_train)
    return model.score(X_test)


def best_bic_gmm_score(X_train, X_test, seed):
    mixtures = [GaussianMixture(k, random_state=seed).fit(X_train) for k in range(1, 21)]
    return min(mixtures, key=lambda m: m.bic(X_train)).score(X_test)


def test_nsf_held_out_likelihood_on_the_s_curve():
    # scikit-learn's S-curve (noise 0.05), 1 000 train / 1 000 test (2 000 / 2 000 does not
    # fit the time budget), the estimator's defaults (alpha, learning rate) but n_layers=3,
    # max_iter=200 (for time) and early_stopping=True. The held-out score of this sharp
    # manifold swings from epoch to epoch without early stopping: seeds 0 / 1 / 2 (nats
    # per sample) give -1.656 / -1.641 / -1.631 after 200 epochs but -1.830 / -2.080 /
    # -1.570 after 150 (lr 3e-3: -1.762 / -1.784 / -1.738 and -1.744 / -1.712 / -1.699,
    # overfitting). With early stopping: -1.603 / -1.681 / -1.573, against the plain zuko
    # NSF of the same size (Adam, lr 1e-3) -1.715 / -1.668 / -1.653 after 150 epochs and
    # -1.719 / -1.688 / -1.696 after 200 (the estimator leads by -0.013 to 0.123) and the
    # best-BIC Gaussian mixture -1.822 / -1.706 / -1.881 (leads by 0.025 to 0.31). The
    # plain loop runs 150 epochs for time (34 s for the whole test alone on the 2-core
    # machine, 59 s beside the other pytest worker and another job).
    X = make_s_curve(2000, noise=0.05, random_state=0)[0]
    X_train, X_test = X[:1000], X[1000:]
    nsf = estimator_nsf_score(X_train, X_test)
    plain = plain_zuko_nsf_score(X_train, X_test, seed=0, epochs=150)
    gmm = best_bic_gmm_score(X_train, X_test, seed=0)
    assert nsf >= plain - 0.05, (nsf, plain)
    assert nsf > gmm, (nsf, gmm)


def test_nsf_held_out_likelihood_on_the_sine():
    # x2 = sin(x1) + 0.1 eps, x1 ~ U(-3, 3), 1 000 train / 1 000 test (for time); the
    # estimator's defaults but n_layers=3, max_iter=200 and early_stopping=True, as on the
    # S-curve. Measured, seeds 0 / 1 / 2 (nats per sample; true density about -0.9):
    #   estimator, early stopping:            -0.941 / -0.946 / -1.016
    #   estimator, no early stopping:         -0.969 / -0.949 / -1.122
    #   estimator, learning_rate_init=3e-3:   -0.953 / -0.955 / -1.020
    #   plain zuko NSF (200 epochs):          -0.961 / -0.962 / -1.033
    #   best-BIC Gaussian mixture:            -1.023 / -0.938 / -1.023
    # With early stopping the estimator is 0.016 to 0.020 above the plain loop on every
    # seed. It beats the mixture on seeds 0 and 2 only (seed 1: -0.946 against -0.938,
    # within the test set's standard error of about 0.03), so that is not asserted. At
    # 2 000 / 2 000 (max_iter=300, 70 s per fit) it is no different: -0.933 / -1.014 /
    # -0.939 against the mixture's (k = 8) -0.934 / -0.953 / -0.963, standard error 0.017
    # (2026-11-26): an 8-component mixture is within 0.04 nats of the true density here.
    X = sine(2000, seed=0)
    X_train, X_test = X[:1000], X[1000:]
    nsf = estimator_nsf_score(X_train, X_test)
    plain = plain_zuko_nsf_score(X_train, X_test, seed=0, epochs=200)
    assert nsf >= plain - 0.05, (nsf, plain)
