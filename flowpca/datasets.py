"""The data sets of Feinman & Parthasarathy (2020), generated with known latent factors.

Every generator returns ``(X, latent)``: the observations and the true latent factors,
one column per factor, so that recovered components can be checked against them.
"""

import numpy as np
from sklearn.utils import check_random_state


def make_sine_wave(n_samples=10_000, random_state=None):
    """The paper's 3-D sine wave with a 2-D Gaussian latent.

    ``X = [2 e1, e2 / 2, sin(2 e1)]`` with ``e1, e2 ~ N(0, 1)``.

    Parameters
    ----------
    n_samples : int, default=10000
        Number of observations.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_samples, 3)
        Observations.
    latent : ndarray of shape (n_samples, 2)
        ``e1`` (along the wave) and ``e2`` (across it).

    Examples
    --------
    >>> from flowpca.datasets import make_sine_wave
    >>> X, latent = make_sine_wave(5, random_state=0)
    >>> X.shape, latent.shape
    ((5, 3), (5, 2))
    >>> bool((X[:, 0] == 2 * latent[:, 0]).all())
    True
    """
    rng = check_random_state(random_state)
    eps = rng.normal(size=(n_samples, 2))
    X = np.column_stack([2 * eps[:, 0], eps[:, 1] / 2, np.sin(2 * eps[:, 0])])
    return X, eps


def make_s_curve_gaussian(n_samples=10_000, random_state=None):
    """The paper's S-curve, with a Gaussian factor along the curve.

    ``t = 3 pi eta0`` with ``eta0 ~ N(0, 0.15^2)``, height ``eta1 ~ U(0, 1)``,
    ``X = [sin t, 2 eta1, sign(t) (cos t - 1)]``. (scikit-learn's
    :func:`~sklearn.datasets.make_s_curve` is the same surface with ``t`` uniform.)

    Parameters
    ----------
    n_samples : int, default=10000
        Number of observations.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_samples, 3)
        Observations.
    latent : ndarray of shape (n_samples, 2)
        ``t`` (along the curve) and the height ``eta1``.

    Examples
    --------
    >>> import numpy as np
    >>> from flowpca.datasets import make_s_curve_gaussian
    >>> X, latent = make_s_curve_gaussian(5, random_state=0)
    >>> X.shape, latent.shape
    ((5, 3), (5, 2))
    >>> np.allclose(X[:, 0], np.sin(latent[:, 0]))
    True
    """
    rng = check_random_state(random_state)
    t = 3 * np.pi * rng.normal(scale=0.15, size=n_samples)
    height = rng.uniform(size=n_samples)
    X = np.column_stack([np.sin(t), 2 * height, np.sign(t) * (np.cos(t) - 1)])
    return X, np.column_stack([t, height])


def make_banana(n_samples=10_000, random_state=None):
    """The paper's 2-D banana: ``X = [2 e1, 0.8 e1^2 + 0.5 e2]``, ``e ~ N(0, I)``.

    Its exact flow to ``N(0, I)`` is :func:`banana_flow` (determinant 1).

    Parameters
    ----------
    n_samples : int, default=10000
        Number of observations.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Observations.
    latent : ndarray of shape (n_samples, 2)
        ``e1`` and ``e2``.

    Examples
    --------
    >>> from flowpca.datasets import make_banana
    >>> X, latent = make_banana(5, random_state=0)
    >>> X.shape, latent.shape
    ((5, 2), (5, 2))
    """
    rng = check_random_state(random_state)
    eps = rng.normal(size=(n_samples, 2))
    X = np.column_stack([2 * eps[:, 0], 0.8 * eps[:, 0] ** 2 + 0.5 * eps[:, 1]])
    return X, eps


def banana_flow(X):
    """The paper's analytic map of the banana to ``N(0, I)`` and its Jacobians.

    Parameters
    ----------
    X : ndarray of shape (n, 2)
        Banana coordinates (not centered).

    Returns
    -------
    Y : ndarray of shape (n, 2)
        ``f(X)``, standard normal for banana data.
    J : ndarray of shape (n, 2, 2)
        The Jacobians ``J_f(X)``, each of determinant 1.

    Examples
    --------
    >>> import numpy as np
    >>> from flowpca.datasets import banana_flow, make_banana
    >>> X, _ = make_banana(2000, random_state=0)
    >>> Y, J = banana_flow(X)
    >>> np.allclose(np.linalg.det(J), 1.0)
    True
    >>> Y.std(axis=0).round(1)
    array([1., 1.])
    """
    x1, x2 = X[:, 0], X[:, 1]
    r3 = np.sqrt(3.0)
    Y = np.column_stack([-x1 / 4 - r3 * x2 + r3 / 5 * x1**2,
                         r3 / 4 * x1 - x2 + x1**2 / 5])
    J = np.empty((X.shape[0], 2, 2))
    J[:, 0, 0] = -0.25 + 2 * r3 / 5 * x1
    J[:, 0, 1] = -r3
    J[:, 1, 0] = r3 / 4 + 0.4 * x1
    J[:, 1, 1] = -1.0
    return Y, J


def make_embedded_plane(n_samples=1_000, random_state=None):
    """Appendix A's linear demo: a 2-D Gaussian embedded in 3-D (singular covariance).

    Parameters
    ----------
    n_samples : int, default=1000
        Number of observations.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_samples, 3)
        Observations, on a plane through the origin.
    latent : ndarray of shape (n_samples, 2)
        The standard normal coordinates on the plane.

    Examples
    --------
    >>> import numpy as np
    >>> from flowpca.datasets import make_embedded_plane
    >>> X, latent = make_embedded_plane(100, random_state=0)
    >>> int(np.linalg.matrix_rank(X))
    2
    """
    rng = check_random_state(random_state)
    latent = rng.normal(size=(n_samples, 2))
    return latent @ np.array([[2.0, 1.0, 0.5], [0.0, 1.0, -1.0]]), latent


def make_curve_2d(n_samples=1_000, random_state=None):
    """Appendix A's nonlinear demo: a 1-D curve ``x2 = sin(x1)`` in 2-D, no noise.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of observations.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Observations, on the curve.
    latent : ndarray of shape (n_samples, 1)
        The standard normal position ``x1`` along the curve.

    Examples
    --------
    >>> import numpy as np
    >>> from flowpca.datasets import make_curve_2d
    >>> X, latent = make_curve_2d(5, random_state=0)
    >>> np.allclose(X[:, 1], np.sin(latent[:, 0]))
    True
    """
    rng = check_random_state(random_state)
    t = rng.normal(size=n_samples)
    return np.column_stack([t, np.sin(t)]), t[:, None]


def make_digit_images(n_samples=1_797, noise=0.1, random_state=None):
    """Image-like data offline, in the place of the paper's MNIST: scikit-learn's 8 x 8
    digits upsampled to 28 x 28 (784 features).

    Each image of :func:`sklearn.datasets.load_digits` (bundled with scikit-learn: nothing
    is downloaded) is upsampled by :func:`scipy.ndimage.zoom` (factor 3.5, bilinear),
    each pixel standardized over the 1 797 images (pixels that are 0 in every image stay
    0), and Gaussian noise of standard deviation ``noise`` added, so that no pixel is
    constant.

    Parameters
    ----------
    n_samples : int, default=1797
        Number of images: a random subset of the 1 797 digits, or, beyond 1 797, the
        digits drawn with replacement (each with its own noise).
    noise : float, default=0.1
        Standard deviation of the added noise, in standardized units (>= 0).
    random_state : int, RandomState instance or None, default=None
        Seed of the subset and the noise.

    Returns
    -------
    X : ndarray of shape (n_samples, 784)
        The images, row-major 28 x 28.
    latent : ndarray of shape (n_samples, 1)
        The digit (0-9) each image shows.

    Examples
    --------
    >>> from flowpca.datasets import make_digit_images
    >>> X, digit = make_digit_images(100, random_state=0)
    >>> X.shape, digit.shape
    ((100, 784), (100, 1))
    >>> bool(X.std(axis=0).min() > 0)  # no constant pixel
    True
    """
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}.")
    rng = check_random_state(random_state)
    digits = load_digits()
    images = np.stack([zoom(image, 3.5, order=1) for image in digits.images])
    pixels = images.reshape(len(images), -1)
    scale = pixels.std(axis=0)
    pixels = (pixels - pixels.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    n_digits = len(pixels)
    rows = rng.choice(n_digits, n_samples, replace=n_samples > n_digits)
    X = pixels[rows] + noise * rng.normal(size=(n_samples, pixels.shape[1]))
    return X, digits.target[rows, None]
