"""
==================================
Nonlinear components of an S-curve
==================================

The paper's S-curve: a 2-D sheet bent into an S in 3-D. One latent factor, ``t``, runs
along the S (Gaussian), the other is the height (uniform). The flow's local components
follow the sheet: component 1 runs along ``t`` and component 2 up the height, and the
third direction, across the sheet, is nearly empty: its local variance falls towards the
floor ``alpha``. Unlike PCA, the model is also a density of the sheet: its samples lie on
the S.
"""

# %%
# The data
# --------
# :func:`~flowpca.datasets.make_s_curve_gaussian` returns the observations and their
# true latent factors. We keep the data small so that the example runs in seconds.
import matplotlib.pyplot as plt
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

from flowpca import NormalizingFlowPCA
from flowpca.datasets import make_s_curve_gaussian
from flowpca.plotting import plot_components, plot_local_variances, plot_loss_curve

X, latent = make_s_curve_gaussian(1000, random_state=0)
t, height = latent.T

fig = plt.figure(figsize=(5, 4), layout="constrained")
ax = fig.add_subplot(projection="3d")
ax.scatter(*X.T, c=t, s=4)
ax.view_init(elev=15, azim=-70)
ax.set_title("S-curve, coloured by t")

# %%
# Fit
# ---
# Two components, the paper's invertible MLP (8 asinh layers) and ``alpha=5e-5``. We
# stop after 80 epochs to keep the example fast (the default ``max_iter`` is 400), so
# expect a :class:`~sklearn.exceptions.ConvergenceWarning`.
model = NormalizingFlowPCA(n_components=2, alpha=5e-5, max_iter=80, random_state=0, flow="mlp")
model.fit(X)
print(f"{model.n_iter_} epochs; explained variance {model.explained_variance_.round(3)}")

# %%
# Components against the true factors
# -----------------------------------
# Component 1 follows ``t`` and component 2 the height (rank correlations near 1). On
# this data set PCA's components do too: ``t`` is Gaussian, so most points sit on the
# middle of the S, where it is nearly straight. The flow's advantage is elsewhere: a
# density of the sheet (below) and the dimension of the data (the variance spectrum).
Y = model.transform(X)
Y_pca = PCA(n_components=2).fit_transform(X)
for name, components in [("flow", Y), ("PCA", Y_pca)]:
    rho = [abs(spearmanr(components[:, i], factor)[0]) for i, factor in enumerate(latent.T)]
    print(f"{name:>4}: |Spearman| with t {rho[0]:.3f}, with height {rho[1]:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
for ax, factor, name in zip(axes, (t, height), ("t", "height")):
    points = ax.scatter(Y[:, 0], Y[:, 1], c=factor, s=4)
    fig.colorbar(points, ax=ax, label=name)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.set_title(f"Flow components, coloured by {name}")

# %%
# Local directions
# ----------------
# :func:`~flowpca.plotting.plot_components` colours the data by each component and draws
# the local principal directions at points spread over the data: ``v_1(x)`` turns with
# the S, ``v_2(x)`` points up the sheet everywhere.
axes = plot_components(model, X, n_arrows=30)
for ax in axes:
    ax.view_init(elev=15, azim=-70)

# %%
# The variance spectrum
# ---------------------
# Two local variances stand well above the third, which is falling towards the floor
# ``alpha`` (more epochs bring it down further): the data are a 2-D sheet.
plot_local_variances(model, X)

# %%
# A density of the sheet
# ----------------------
# Samples of the flow lie on the S; those of the linear flow (PCA's Gaussian, with its
# likelihood) fill a box around it. The mean log-likelihoods say the same.
linear = NormalizingFlowPCA(flow="linear").fit(X)
print(f"mean log-likelihood: flow {model.score(X):.2f}, linear {linear.score(X):.2f} nats")
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), sharex=True, sharey=True,
                         layout="constrained")
for ax, (name, points) in zip(axes, [("data", X), ("flow samples", model.sample(1000)),
                                    ("linear-flow samples", linear.sample(1000))]):
    ax.scatter(points[:, 0], points[:, 2], s=2)
    ax.set_title(name)
    ax.set_xlabel("$x_1$")
axes[0].set_ylabel("$x_3$")

# %%
# Training
# --------
plot_loss_curve(model)
plt.show()
