"""Manifolds of known dimension, for the intrinsic-dimension and injective-flow benchmarks.

Each :class:`Manifold` is a map from a latent domain to ``R^D``: curves (d = 1), surfaces
(d = 2) and 3- to 5-dimensional manifolds, embedded in 3 to 50 dimensions, linearly
(a fixed random isometry) or nonlinearly, some curled (helix, trefoil, swiss roll,
S-curve), some closed (circle, sphere, torus), some with boundary (saddle, Mobius strip,
balls), and two full-dimensional sets (a solid cube in 3-D, a solid 4-ball in 4-D), on
which a rule that always finds a gap is wrong. None of them was used to choose a default
of the package before the intrinsic-dimension rule was chosen on ``TRAINING_HALF``.

``sample(n, noise, seed)`` draws ``n`` points uniformly in the latent domain (not in
area: curvature makes some parts denser, as real data would) and adds isotropic Gaussian
noise of standard deviation ``noise x scale``, where ``scale`` is the root mean square
distance of the noise-free points to their mean. ``distance(points)`` is the distance of
each point to the noise-free manifold, by a KD-tree over a dense deterministic grid of the
latent domain (for curves and surfaces only: ``resolution`` bounds its error by half the
grid's spacing). ``diameter`` is the largest distance between two grid points.

``SUITE`` lists the manifolds; ``TRAINING_HALF`` and ``TEST_HALF`` split them (each half
has curves, surfaces and higher-dimensional ones, linear and nonlinear embeddings) so that
a rule chosen on one half is reported on manifolds it never saw.
"""

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist
from scipy.stats import special_ortho_group

_GRID_POINTS = {1: 20_000, 2: 600}  # per latent axis: 20 000 along curves, 600^2 on surfaces


def _isometry(d_from, d_to, seed):
    """A fixed random ``(d_from, d_to)`` matrix with orthonormal rows."""
    return special_ortho_group.rvs(d_to, random_state=seed)[:d_from]


@dataclass(frozen=True)
class Manifold:
    """A ``d``-dimensional manifold in ``R^D``: ``embed`` maps latent points of the box
    ``low`` .. ``high`` (or of the ball/sphere where ``latent`` says so) to ``R^D``."""

    name: str
    dimension: int
    n_features: int
    embed: object
    low: tuple = ()
    high: tuple = ()
    latent: str = "box"  # 'box', 'ball' (uniform in the unit d-ball), 'sphere' (S^d in R^(d+1))
    description: str = ""

    def _latent(self, n, rng):
        if self.latent == "box":
            return rng.uniform(self.low, self.high, size=(n, len(self.low)))
        k = self.dimension + (self.latent == "sphere")
        u = rng.normal(size=(n, k))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        if self.latent == "ball":
            u *= rng.uniform(size=(n, 1)) ** (1.0 / k)
        return u

    def clean(self, n, seed):
        """``n`` noise-free points."""
        return self.embed(self._latent(n, np.random.RandomState(seed)))

    def sample(self, n, noise=0.0, seed=0):
        """``n`` points with Gaussian noise of std ``noise x scale``."""
        X = self.clean(n, seed)
        if noise > 0:
            rng = np.random.RandomState(seed + 10_000)
            X = X + rng.normal(scale=noise * self.scale, size=X.shape)
        return X

    @functools.cached_property
    def scale(self):
        X = self.clean(20_000, seed=12345)
        return float(np.sqrt(np.mean(np.sum((X - X.mean(0)) ** 2, axis=1))))

    @property
    def measurable(self):
        """Whether :meth:`distance` is available (curves and surfaces of a box)."""
        return self.dimension in _GRID_POINTS and self.latent in ("box", "sphere")

    @functools.cached_property
    def _grid(self):
        if self.latent == "sphere":  # S^1 or S^2: a Fibonacci / angle grid
            if self.dimension == 1:
                t = np.linspace(0, 2 * np.pi, _GRID_POINTS[1], endpoint=False)
                return self.embed(np.column_stack([np.cos(t), np.sin(t)]))
            m = _GRID_POINTS[2] ** 2
            i = np.arange(m) + 0.5
            z, phi = 1 - 2 * i / m, np.pi * (1 + 5**0.5) * i
            r = np.sqrt(1 - z**2)
            return self.embed(np.column_stack([r * np.cos(phi), r * np.sin(phi), z]))
        axes = [np.linspace(lo, hi, _GRID_POINTS[self.dimension])
                for lo, hi in zip(self.low, self.high)]
        return self.embed(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(
            -1, self.dimension))

    @functools.cached_property
    def _tree(self):
        return cKDTree(self._grid)

    @functools.cached_property
    def resolution(self):
        """Largest distance from a grid point to its nearest other grid point."""
        return float(self._tree.query(self._grid, k=2)[0][:, 1].max())

    @functools.cached_property
    def diameter(self):
        grid = self._grid[:: max(1, len(self._grid) // 3000)]
        return float(pdist(grid).max())

    def distance(self, points):
        """Distance of each point to the noise-free manifold (grid approximation)."""
        if not self.measurable:
            raise ValueError(f"{self.name}: no distance for a {self.dimension}-D manifold")
        return self._tree.query(np.asarray(points, dtype=float))[0]


def _helix(u):
    t = u[:, 0]
    return np.column_stack([np.cos(t), np.sin(t), t / 3])


def _trefoil(u):
    t = u[:, 0]
    return np.column_stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t),
                            -np.sin(3 * t)]) / 3


def _tilted_circle(u):
    return np.column_stack([u, np.zeros(len(u))]) @ _isometry(3, 3, seed=1)


def _torus(u, R=1.0, r=0.4):
    a, b = u[:, 0], u[:, 1]
    return np.column_stack([(R + r * np.cos(b)) * np.cos(a), (R + r * np.cos(b)) * np.sin(a),
                            r * np.sin(b)])


def _swiss_roll(u):
    t, h = u[:, 0], u[:, 1]
    return np.column_stack([t * np.cos(t), h, t * np.sin(t)]) / 5


def _s_curve(u):  # scikit-learn's make_s_curve without its noise
    t, h = u[:, 0], u[:, 1]
    return np.column_stack([np.sin(t), h, np.sign(t) * (np.cos(t) - 1)])


def _mobius(u):
    a, w = u[:, 0], u[:, 1]
    return np.column_stack([(1 + w / 2 * np.cos(a / 2)) * np.cos(a),
                            (1 + w / 2 * np.cos(a / 2)) * np.sin(a), w / 2 * np.sin(a / 2)])


def _saddle(u):
    return np.column_stack([u[:, 0], u[:, 1], u[:, 0] ** 2 - u[:, 1] ** 2])


def _linear(d, D, seed):
    basis = _isometry(d, D, seed)
    return lambda u: u @ basis


def _curved(d, D, seed, frequency=1.5):
    """``u -> Q [u, sin(W u + b)]``: injective (its first d coordinates are u), curved,
    rotated by a fixed isometry into all D coordinates."""
    rng = np.random.RandomState(seed)
    W = rng.normal(scale=frequency, size=(d, D - d))
    b = rng.uniform(0, 2 * np.pi, size=D - d)
    Q = _isometry(D, D, seed)
    return lambda u: np.column_stack([u, 0.5 * np.sin(u @ W + b)]) @ Q


SUITE = (
    Manifold("circle", 1, 3, _tilted_circle, latent="sphere",
             description="unit circle, tilted in 3-D"),
    Manifold("helix", 1, 3, _helix, (0.0,), (3 * np.pi,),
             description="(cos t, sin t, t/3), t in [0, 3 pi]"),
    Manifold("trefoil", 1, 3, _trefoil, (0.0,), (2 * np.pi,), description="trefoil knot"),
    Manifold("curve_10d", 1, 10, _curved(1, 10, seed=2), (-1.0,), (1.0,),
             description="a curve [t, sin(w t + b) / 2] rotated into 10-D"),
    Manifold("sphere", 2, 3, lambda u: u, latent="sphere", description="unit sphere in 3-D"),
    Manifold("torus", 2, 3, _torus, (0.0, 0.0), (2 * np.pi, 2 * np.pi),
             description="torus R = 1, r = 0.4"),
    Manifold("swiss_roll", 2, 3, _swiss_roll, (1.5 * np.pi, 0.0), (4.5 * np.pi, 4.0),
             description="swiss roll / 5"),
    Manifold("s_curve", 2, 3, _s_curve, (-1.5 * np.pi, 0.0), (1.5 * np.pi, 2.0),
             description="scikit-learn's S-curve (uniform t)"),
    Manifold("mobius", 2, 3, _mobius, (0.0, -1.0), (2 * np.pi, 1.0),
             description="Mobius strip, width 1"),
    Manifold("saddle", 2, 3, _saddle, (-1.0, -1.0), (1.0, 1.0),
             description="z = x^2 - y^2 on [-1, 1]^2"),
    Manifold("surface_10d", 2, 10, _curved(2, 10, seed=3), (-1.0, -1.0), (1.0, 1.0),
             description="a surface [u, sin(W u + b) / 2] rotated into 10-D"),
    Manifold("ball_3d_in_10d", 3, 10, _linear(3, 10, seed=4), latent="ball",
             description="uniform 3-ball, linearly in 10-D"),
    Manifold("sphere_3d_in_5d", 3, 5, _linear(4, 5, seed=5), latent="sphere",
             description="S^3 (in R^4), linearly in 5-D"),
    Manifold("cube_4d_in_20d", 4, 20, _curved(4, 20, seed=6), (-1.0,) * 4, (1.0,) * 4,
             description="a 4-D cube [u, sin(W u + b) / 2] rotated into 20-D"),
    Manifold("ball_5d_in_50d", 5, 50, _linear(5, 50, seed=7), latent="ball",
             description="uniform 5-ball, linearly in 50-D"),
    Manifold("cube_3d_in_12d", 3, 12, _curved(3, 12, seed=8), (-1.0,) * 3, (1.0,) * 3,
             description="a 3-D cube [u, sin(W u + b) / 2] rotated into 12-D"),
    # Full-dimensional sets (d = D): a rule that always finds a gap is wrong on them.
    Manifold("solid_cube_3d", 3, 3, _linear(3, 3, seed=9), (-1.0,) * 3, (1.0,) * 3,
             description="a solid cube in 3-D, rotated (full-dimensional)"),
    Manifold("solid_ball_4d", 4, 4, _linear(4, 4, seed=10), latent="ball",
             description="a solid 4-ball in 4-D (full-dimensional)"),
)
BY_NAME = {m.name: m for m in SUITE}
TRAINING_HALF = ("circle", "trefoil", "sphere", "swiss_roll", "mobius", "surface_10d",
                 "ball_3d_in_10d", "cube_4d_in_20d", "solid_cube_3d")
TEST_HALF = ("helix", "curve_10d", "torus", "s_curve", "saddle", "sphere_3d_in_5d",
             "ball_5d_in_50d", "cube_3d_in_12d", "solid_ball_4d")
assert sorted(TRAINING_HALF + TEST_HALF) == sorted(BY_NAME)
