"""The benchmark data sets: generated or bundled with scikit-learn, fixed seeds, split
into training and test sets, with their true latent factors where they exist.

Every loader returns a :class:`Dataset`. ``load(name, quick=False)`` builds one by name;
``NAMES`` lists them in the order the benchmarks report them.

- ``s_curve``: the paper's S-curve (Gaussian position along the curve, docs/contributing.rst),
  10 000 training points as in the paper.
- ``sine``: the paper's sine wave, 10 000 training points.
- ``banana``: the paper's analytic banana (its exact flow is known).
- ``swiss_roll``: :func:`sklearn.datasets.make_swiss_roll`, no noise.
- ``digits``: :func:`sklearn.datasets.load_digits`, 64-D, dequantized (uniform noise in
  ``[0, 1)`` added to the integer pixel values 0..16, then divided by 17: values in
  ``[0, 1)``). No latent factors.
- ``embedded_plane``: Appendix A's 2-D Gaussian embedded in 3-D (singular covariance).

Noise-free manifolds (S-curve, sine, swiss roll, embedded plane) have no density in 3-D:
their likelihood is unbounded without a variance floor, which is what ``alpha`` is for.
Their ``manifold_distance`` measures how far points (e.g. a density model's samples) lie
from the true manifold, i.e. the closure of the generator's support:

- ``s_curve``: the curve ``(sin t, sign(t) (cos t - 1))`` in the ``(x0, x2)`` plane, for
  all ``t`` (``t`` is Gaussian: beyond ``|t| = pi`` the S closes into two unit circles),
  swept along ``x1`` in ``[0, 2]``;
- ``sine``: the surface ``x2 = sin(x0)``, any ``x1``;
- ``swiss_roll``: the spiral ``(t cos t, t sin t)``, ``t`` in ``[1.5 pi, 4.5 pi]``, swept
  along ``x1`` in ``[0, 21]``;
- ``embedded_plane``: the plane through the origin spanned by the generator's two rows
  (exact, by projection).

The three curved ones are a plane curve swept along ``x1``: the distance is
``sqrt(d_curve(x0, x2)^2 + d_interval(x1)^2)``, ``d_curve`` by a KD-tree over a fine,
deterministic grid of the curve (``CURVE_POINTS`` points evenly spaced in the curve's
parameter, built once per process and curve), ``d_interval`` exact. The grid's spacing
(``resolution``) bounds the error of ``d_curve``: it is at most half the spacing.
"""

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from sklearn.datasets import load_digits, make_swiss_roll

from flowpca.datasets import (make_banana, make_embedded_plane, make_s_curve_gaussian,
                              make_sine_wave)

SEED = 0
NAMES = ("s_curve", "sine", "banana", "swiss_roll", "digits", "embedded_plane")


@dataclass
class Dataset:
    """A training/test split with what the benchmarks need to score it.

    Attributes
    ----------
    name : str
    description : str
    X_train, X_test : ndarray of shape (n, n_features)
    latent_train, latent_test : ndarray of shape (n, n_factors) or None
        True latent factors (None when unknown).
    factor_names : tuple of str
    n_components : int
        Components the methods keep (the intrinsic dimension where it is known).
    seed : int
        Seed of the generator and of the split.
    tangents : callable or None
        ``tangents(latent) -> (n, n_features, n_factors)``: the manifold's tangent
        vectors ``dX / d factor`` (unnormalized) for the generated manifolds.
    manifold_distance : SweptCurveDistance, PlaneDistance or None
        ``manifold_distance(X) -> (n,)``: Euclidean distance of each row of ``X`` to the
        true noise-free manifold (None where there is no such manifold, or noise).
    """

    name: str
    description: str
    X_train: np.ndarray
    X_test: np.ndarray
    latent_train: np.ndarray = None
    latent_test: np.ndarray = None
    factor_names: tuple = ()
    n_components: int = 2
    seed: int = SEED
    tangents: object = field(default=None, repr=False)
    manifold_distance: object = field(default=None, repr=False)

    @property
    def n_features(self):
        return self.X_train.shape[1]


def _split(X, latent, n_train, rng):
    order = rng.permutation(X.shape[0])
    train, test = order[:n_train], order[n_train:]
    return (X[train], X[test], None if latent is None else latent[train],
            None if latent is None else latent[test])


def _s_curve_tangents(latent):
    t = latent[:, 0]
    along = np.column_stack([np.cos(t), np.zeros_like(t), -np.sign(t) * np.sin(t)])
    across = np.tile([0.0, 2.0, 0.0], (t.size, 1))
    return np.stack([along, across], axis=2)


def _sine_tangents(latent):
    e1 = latent[:, 0]
    along = np.column_stack([2 * np.ones_like(e1), np.zeros_like(e1), 2 * np.cos(2 * e1)])
    across = np.tile([0.0, 0.5, 0.0], (e1.size, 1))
    return np.stack([along, across], axis=2)


# ---------------------------------------------------------------- true manifolds
CURVE_POINTS = 400_000


def _s_curve_curve(t):
    return np.column_stack([np.sin(t), np.sign(t) * (np.cos(t) - 1)])


def _sine_curve(x):
    return np.column_stack([x, np.sin(x)])


def _swiss_roll_curve(t):
    return np.column_stack([t * np.cos(t), t * np.sin(t)])


@functools.lru_cache(maxsize=None)
def _curve_tree(curve, start, stop, n_points):
    """KD-tree over ``curve`` on ``n_points`` evenly spaced parameters in ``[start,
    stop]``, and the median nearest-neighbour spacing of those points (cached: built once
    per process and curve)."""
    points = curve(np.linspace(start, stop, n_points))
    tree = cKDTree(points)
    spacing = float(np.median(tree.query(points, k=2)[0][:, 1]))
    return tree, spacing


@dataclass(frozen=True)
class SweptCurveDistance:
    """Distance to the surface ``{x: (x0, x2) on a plane curve, x1 in x1_range}``.

    Attributes
    ----------
    curve : callable
        ``curve(s) -> (m, 2)``: the curve's ``(x0, x2)`` points at parameters ``s``.
    s_range : tuple of float
        Parameters of the grid over the curve (covering the whole manifold, once the
        period is applied).
    x1_range : tuple of float
        The sweep's extent along ``x1`` (infinite bounds allowed).
    x0_period : float or None
        The surface repeats with this period along ``x0``: points are moved into
        ``[-period / 2, period / 2)`` first (the grid must cover one period either side).
    n_points : int
    """

    curve: object
    s_range: tuple
    x1_range: tuple = (-np.inf, np.inf)
    x0_period: float = None
    n_points: int = CURVE_POINTS

    @property
    def tree(self):
        return _curve_tree(self.curve, *self.s_range, self.n_points)[0]

    @property
    def resolution(self):
        """Median spacing of the curve's grid points (the distance's error is at most
        half the local spacing)."""
        return _curve_tree(self.curve, *self.s_range, self.n_points)[1]

    def describe(self):
        return f"curve grid of {self.n_points} points, median spacing {self.resolution:.1e}"

    def __call__(self, X):
        X = np.asarray(X, dtype=float)
        x0 = X[:, 0]
        if self.x0_period is not None:
            x0 = np.mod(x0 + self.x0_period / 2, self.x0_period) - self.x0_period / 2
        in_plane = self.tree.query(np.column_stack([x0, X[:, 2]]))[0]
        along = X[:, 1] - np.clip(X[:, 1], *self.x1_range)
        return np.hypot(in_plane, along)


@dataclass(frozen=True)
class PlaneDistance:
    """Distance to the linear span of ``basis``'s rows (exact: by projection)."""

    basis: tuple
    resolution: float = 0.0

    def describe(self):
        return "exact (projection onto the plane)"

    def __call__(self, X):
        q, _ = np.linalg.qr(np.asarray(self.basis, dtype=float).T)
        X = np.asarray(X, dtype=float)
        return np.linalg.norm(X - (X @ q) @ q.T, axis=1)


def _embedded_plane_basis():
    """Rows spanning :func:`make_embedded_plane`'s plane, read off the generator
    (``X = latent @ basis``) rather than copied from it."""
    X, latent = make_embedded_plane(2, random_state=0)
    return tuple(map(tuple, np.linalg.lstsq(latent, X, rcond=None)[0]))


MANIFOLDS = {
    "s_curve": SweptCurveDistance(_s_curve_curve, (-2 * np.pi, 2 * np.pi), (0.0, 2.0)),
    "sine": SweptCurveDistance(_sine_curve, (-2 * np.pi, 2 * np.pi),
                               x0_period=2 * np.pi),
    "swiss_roll": SweptCurveDistance(_swiss_roll_curve, (1.5 * np.pi, 4.5 * np.pi),
                                     (0.0, 21.0)),
    "embedded_plane": PlaneDistance(_embedded_plane_basis()),
}


def _generated(name, description, make, n_train, n_test, factor_names, n_components,
               seed, tangents=None):
    X, latent = make(n_train + n_test, random_state=seed)
    parts = _split(X, latent, n_train, np.random.RandomState(seed + 1))
    return Dataset(name, description, *parts, factor_names=factor_names,
                   n_components=n_components, seed=seed, tangents=tangents,
                   manifold_distance=MANIFOLDS.get(name))


def load_s_curve(n_train=10_000, n_test=2_000, seed=SEED):
    """The paper's S-curve (Gaussian ``t``); factors ``t`` and the height."""
    return _generated("s_curve", "paper S-curve, t ~ N(0, (0.45 pi)^2), 3-D",
                      make_s_curve_gaussian, n_train, n_test, ("t", "height"), 2, seed,
                      _s_curve_tangents)


def load_sine(n_train=10_000, n_test=2_000, seed=SEED):
    """The paper's sine wave; factors ``e1`` (along) and ``e2`` (across)."""
    return _generated("sine", "paper sine wave [2e1, e2/2, sin 2e1], 3-D", make_sine_wave,
                      n_train, n_test, ("e1", "e2"), 2, seed, _sine_tangents)


def load_banana(n_train=5_000, n_test=2_000, seed=SEED):
    """The paper's banana, 2-D; one component kept, scored against ``e1`` (along it)."""
    def make(n, random_state):
        X, latent = make_banana(n, random_state=random_state)
        return X, latent[:, :1]
    return _generated("banana", "paper banana [2e1, 0.8 e1^2 + 0.5 e2], 2-D", make,
                      n_train, n_test, ("e1",), 1, seed)


def load_swiss_roll(n_train=5_000, n_test=2_000, seed=SEED):
    """scikit-learn's swiss roll without noise; factors ``t`` (along the roll) and the
    height."""
    def make(n, random_state):
        X, t = make_swiss_roll(n, noise=0.0, random_state=random_state)
        return X, np.column_stack([t, X[:, 1]])
    return _generated("swiss_roll", "make_swiss_roll(noise=0), 3-D", make, n_train,
                      n_test, ("t", "height"), 2, seed)


def dequantized_digits(digit=None, seed=SEED):
    """``load_digits`` pixels plus ``U(0, 1)`` noise, divided by 17 (values in [0, 1)).

    Parameters
    ----------
    digit : int or None
        Keep one class only (None: all ten).
    seed : int

    Returns
    -------
    X : ndarray of shape (n, 64)
    y : ndarray of shape (n,)
    """
    X, y = load_digits(return_X_y=True)
    if digit is not None:
        X, y = X[y == digit], y[y == digit]
    rng = np.random.RandomState(seed)
    return (X + rng.uniform(size=X.shape)) / 17.0, y


def load_digits_dequantized(n_train=None, n_test=None, seed=SEED, digit=None):
    """``load_digits`` (64-D), dequantized; 75 % training, 25 % test; 10 components."""
    X, _ = dequantized_digits(digit, seed)
    n_total = X.shape[0] if n_train is None else min(X.shape[0], n_train + n_test)
    X = X[np.random.RandomState(seed + 2).permutation(X.shape[0])[:n_total]]
    n_train = int(round(0.75 * n_total)) if n_train is None else n_train
    X_train, X_test, _, _ = _split(X, None, n_train, np.random.RandomState(seed + 1))
    return Dataset("digits", "load_digits, 64-D, dequantized (x + U(0,1)) / 17", X_train,
                   X_test, n_components=10, seed=seed)


def load_embedded_plane(n_train=2_000, n_test=1_000, seed=SEED):
    """Appendix A: a 2-D Gaussian in a plane of 3-D space (rank-2 covariance)."""
    return _generated("embedded_plane", "2-D Gaussian embedded in 3-D (Appendix A)",
                      make_embedded_plane, n_train, n_test, ("z1", "z2"), 2, seed)


_LOADERS = {
    "s_curve": load_s_curve, "sine": load_sine, "banana": load_banana,
    "swiss_roll": load_swiss_roll, "digits": load_digits_dequantized,
    "embedded_plane": load_embedded_plane,
}

# (n_train, n_test) in --quick mode.
_QUICK_SIZES = {name: (300, 200) for name in NAMES}


def load(name, quick=False, seed=SEED):
    """Build the data set ``name`` (one of :data:`NAMES`).

    Parameters
    ----------
    name : str
    quick : bool
        Small sizes (300 training / 200 test points) for smoke runs.
    seed : int

    Returns
    -------
    Dataset
    """
    if name not in _LOADERS:
        raise ValueError(f"Unknown data set {name!r}; choose from {NAMES}.")
    if quick:
        n_train, n_test = _QUICK_SIZES[name]
        return _LOADERS[name](n_train=n_train, n_test=n_test, seed=seed)
    return _LOADERS[name](seed=seed)
