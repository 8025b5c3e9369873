"""
========================================
Handwritten digits: components and alpha
========================================

The paper's MNIST experiment on scikit-learn's 8x8 digits (MNIST cannot be downloaded
here): the images of the digit 2, dequantized with uniform noise and scaled to
``[0, 1)``. Two things to see:

1. the two leading nonlinear components arrange the images by style;
2. without the Tikhonov penalty (``alpha=0``) the flow overfits badly -- a high training
   likelihood and a poor held-out one -- while ``alpha > 0`` generalizes.
"""

# %%
# The data
# --------
# 64 pixels with 17 grey levels. Uniform noise turns the levels into a continuous
# density (dequantization) and dividing by 17 maps the pixels to ``[0, 1)``.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from flowpca import NormalizingFlowPCA

digits = load_digits()
rng = np.random.RandomState(0)
images = digits.data[digits.target == 2]
X = (images + rng.uniform(size=images.shape)) / 17.0
X_train, X_test = train_test_split(X, test_size=0.2, random_state=0)
print(f"{X_train.shape[0]} training and {X_test.shape[0]} held-out images of "
      f"{X.shape[1]} pixels")

# %%
# Regularized and unregularized flows
# -----------------------------------
# A small MLP flow (2 hidden layers; the paper uses 6 on MNIST), 100 epochs each. The
# penalty's weight ``alpha`` is a variance floor (pixel values are in ``[0, 1)``).
# ``alpha=0`` warns that the likelihood is unbounded: the data occupy few of their 64
# dimensions.
scores = {}
for alpha in (0.0, 5e-5, 1e-3):
    model = NormalizingFlowPCA(n_components=2, alpha=alpha, n_layers=2, max_iter=100,
                               random_state=0, flow="mlp").fit(X_train)
    scores[alpha] = model.score(X_train), model.score(X_test)
    print(f"alpha={alpha:<6g} train {scores[alpha][0]:7.1f}  held-out {scores[alpha][1]:7.1f}"
          " nats per image")

fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
positions = np.arange(len(scores))
ax.bar(positions - 0.2, [s[0] for s in scores.values()], width=0.4, label="training")
ax.bar(positions + 0.2, [s[1] for s in scores.values()], width=0.4, label="held-out")
ax.set_xticks(positions, [f"alpha={a:g}" for a in scores])
ax.axhline(0, color="gray", linewidth=0.8)
ax.set_ylabel("mean log-likelihood (nats per image)")
ax.legend()

# %%
# The two leading components
# --------------------------
# The last model (``alpha=1e-3``) generalizes best. Its two leading components place
# each image; a few images are drawn at their positions.
Y = model.transform(X)
fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
ax.scatter(Y[:, 0], Y[:, 1], s=8, alpha=0.4)
for i in np.linspace(0, len(X) - 1, 24).astype(int):
    thumbnail = OffsetImage(images[i].reshape(8, 8), cmap="gray_r", zoom=1.6)
    ax.add_artist(AnnotationBbox(thumbnail, Y[i, :2], frameon=False))
ax.set_xlabel("component 1")
ax.set_ylabel("component 2")
ax.set_title("Digits '2' on their two leading flow components")

# %%
# Samples
# -------
# Draws from the fitted density, back in pixel space.
samples = model.sample(8, random_state=0)
fig, axes = plt.subplots(1, 8, figsize=(8, 1.3), layout="constrained")
for ax, sample in zip(axes, samples):
    ax.imshow(sample.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
    ax.set_axis_off()
plt.show()
