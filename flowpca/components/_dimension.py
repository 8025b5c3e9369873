"""The dimension of the data's manifold, read from the spectrum of local variances.

A flow fitted with the floor ``alpha`` gives the directions the data occupy large local
variances and the others about the noise it learned plus ``alpha``; where the spectrum
falls off is the manifold's dimension (:func:`intrinsic_dimension`, the estimator's
``intrinsic_dimension_``, per point in ``local_intrinsic_dimension``).
"""

import numpy as np


#: The absolute rule's customary threshold (``intrinsic_dimension_threshold=100.0``): a
#: component belongs to the data's manifold when its typical local variance exceeds the
#: floor ``alpha`` this many times. The default rule is the scale-free ``'gap'``.
INTRINSIC_DIMENSION_THRESHOLD = 100.0

# The gap rule's two constants, chosen on the training half of benchmarks/manifolds.py's
# suite (benchmarks/intrinsic_dimension.py, 162 cases per half: 0.846 exact there, 0.883
# on the test half, where scikit-dimension's best, MLE, has 0.827; fractions 1 / 0.8 /
# 0.5 / 0.4 gave 0.815 / 0.815 / 0.821 / 0.809 on the training half, smallest gaps of a
# factor 5 / 3 / 2 0.809 / 0.747 / 0.772; the median of per-point answers 0.852, one case
# more, kept aside so that the answer is read from the one spectrum the estimator shows):
# the last gap of the log-variance spectrum at least GAP_FRACTION times the largest one
# ends the manifold's components; a spectrum whose largest gap is under MIN_GAP (a factor
# of 10 in variance) has no manifold below the full space.
GAP_FRACTION = 0.6
MIN_GAP = float(np.log(10.0))

# Variances below this fraction of the largest count as zero (the rank tolerance of the
# estimator's singularity checks): the threshold rule's floor when alpha is 0, and the
# gap rule's clip before the logarithm.
_RELATIVE_FLOOR = 1e-12


def intrinsic_dimension(typical_variances, alpha, threshold="gap"):
    """Number of components that belong to the data's manifold.

    Directions the data do not occupy get a local variance set by the noise the flow
    learned and by the floor ``alpha`` of the Tikhonov penalty; the manifold's own
    directions get the data's variance along them, orders of magnitude above.

    Parameters
    ----------
    typical_variances : array-like of shape (n_features,) or (n_samples, n_features)
        Per component (largest first), the typical local variance: the geometric mean
        over the training points (for a linear flow, its variance), or one row per point
        for a per-point answer. The geometric mean rather than the arithmetic one because
        local variances are heavy-tailed: a few points far out where the flow is loose
        dominate the arithmetic mean (measured on the paper's sine wave, 1000 points,
        alpha=5e-5: the off-manifold component's arithmetic mean 37 alpha, its
        geometric mean 13 alpha, the two on-manifold ones 2e5 and 5e3 alpha).
    alpha : float
        The floor of the penalty (used by the absolute rule only).
    threshold : 'gap' or float, default='gap'
        'gap': the scale-free rule. With ``l_1 >= ... >= l_D`` the logarithms of the
        variances and ``g_i = l_i - l_(i+1)`` the gaps of that spectrum, the dimension is
        the last ``i`` whose gap is at least ``GAP_FRACTION`` (0.6) times the largest gap
        (so that a manifold whose own extents differ a lot, such as a long thin roll,
        keeps its short direction when the drop to the noise below it is comparable);
        ``D`` when the largest gap is below ``MIN_GAP`` (variances within a factor of 10
        of each other: nothing separates a manifold from the noise). It does not depend
        on the data's units or on ``alpha``.

        A float: the absolute rule of earlier versions, the number of components whose
        variance exceeds ``threshold * alpha`` (with ``alpha = 0``, ``1e-12`` times the
        largest variance), which depends on the data's scale.

    Returns
    -------
    n : int or ndarray of shape (n_samples,)
        Between 1 and ``n_features`` for 'gap' (0 to ``n_features`` for a threshold);
        an array for 2-D input.

    Examples
    --------
    >>> import numpy as np
    >>> from flowpca.components import intrinsic_dimension
    >>> intrinsic_dimension([4.0, 0.5, 1e-4], alpha=0.0)  # a surface in 3-D
    2
    >>> intrinsic_dimension([4.0, 0.01, 1e-4], alpha=0.0)  # a curve (gaps 5.9 and 4.6)
    2
    >>> intrinsic_dimension([4.0, 1e-3, 1e-4], alpha=0.0)  # gaps 8.3 and 2.3
    1
    >>> intrinsic_dimension([4.0, 0.5, 1e-4], alpha=1e-7, threshold=100.0)  # absolute
    3
    """
    variances = np.asarray(typical_variances, dtype=np.float64)
    single = variances.ndim == 1
    variances = np.atleast_2d(variances)
    if variances.shape[-1] == 0:
        dimensions = np.zeros(variances.shape[0], dtype=int)
    elif isinstance(threshold, str):
        dimensions = spectral_gap_dimension(variances)
    else:
        top = variances.max(axis=1, keepdims=True)
        floor = alpha if alpha > 0 else _RELATIVE_FLOOR * top
        dimensions = np.sum(variances > threshold * floor, axis=1)
    return int(dimensions[0]) if single else dimensions.astype(int)


def spectral_gap_dimension(variances, gap_fraction=GAP_FRACTION, min_gap=MIN_GAP):
    """The gap rule of :func:`intrinsic_dimension` on each row of ``variances`` (positive,
    any order), with its two constants explicit."""
    n_features = variances.shape[1]
    if n_features == 1:
        return np.ones(variances.shape[0], dtype=int)
    top = variances.max(axis=1, keepdims=True)
    spectrum = -np.sort(-np.log(np.maximum(variances, _RELATIVE_FLOOR * top)), axis=1)
    gaps = spectrum[:, :-1] - spectrum[:, 1:]
    largest = gaps.max(axis=1, keepdims=True)
    wide = gaps >= gap_fraction * largest
    last_wide = n_features - 1 - np.argmax(wide[:, ::-1], axis=1)  # 1-based index of the gap
    return np.where(largest[:, 0] >= min_gap, last_wide, n_features)
