"""The offline image-like data set (flowpca.datasets.make_digit_images)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from flowpca.datasets import make_digit_images


def test_shapes_labels_and_determinism():
    X, digit = make_digit_images(300, random_state=0)
    assert X.shape == (300, 784) and X.dtype == np.float64
    assert digit.shape == (300, 1) and set(np.unique(digit)) <= set(range(10))
    again, again_digit = make_digit_images(300, random_state=0)
    np.testing.assert_array_equal(X, again)
    np.testing.assert_array_equal(digit, again_digit)
    assert not np.array_equal(X, make_digit_images(300, random_state=1)[0])


def test_pixels_are_standardized_upsampled_digits():
    X, digit = make_digit_images(noise=0.0, random_state=0)
    spread = X.std(axis=0)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(spread[spread > 0], 1.0, rtol=1e-10)
    # Every image of load_digits once, in a random order, with its own label.
    assert sorted(np.bincount(digit.ravel())) == sorted(np.bincount(load_digits().target))
    # Upsampling blends neighbouring pixels: nearly every one of the 784 varies.
    assert np.sum(spread == 0) <= 28


def test_noise_and_repeated_draws():
    X, _ = make_digit_images(2000, noise=0.5, random_state=0)
    assert X.shape == (2000, 784)
    assert X.std(axis=0).min() > 0.4  # the noise alone has standard deviation 0.5
    assert len(np.unique(X, axis=0)) == 2000  # repeated digits get their own noise


@pytest.mark.parametrize("kwargs, match", [
    ({"n_samples": 0}, "n_samples"), ({"n_samples": 2.5}, "n_samples"),
    ({"noise": -1.0}, "noise"), ({"noise": float("nan")}, "noise"),
])
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_digit_images(**kwargs)
