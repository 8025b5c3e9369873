"""
===========
Using a GPU
===========

``device='auto'`` (the default) trains and evaluates the flow on a CUDA GPU when PyTorch
sees one, and on the CPU otherwise; ``dtype='auto'`` is float32 on GPUs and float64 on
the CPU. Nothing else changes. **The output below comes from the machine that built
these docs; this project's documentation builds run on CPU-only machines, where the
script runs on the CPU** (``CUDA available: False``). The same script on a GPU machine,
with a CUDA build of PyTorch, reports ``cuda`` and ``torch.float32``.
"""

# %%
# Fit wherever the data can go
# ----------------------------
import pickle

import matplotlib.pyplot as plt
import torch

from flowpca import NormalizingFlowPCA
from flowpca.datasets import make_sine_wave
from flowpca.plotting import plot_loss_curve

print("CUDA available:", torch.cuda.is_available())

X, latent = make_sine_wave(1000, random_state=0)
model = NormalizingFlowPCA(n_components=2, n_layers=4, max_iter=40, device="auto",
                           random_state=0, flow="mlp").fit(X)
parameter = next(model.flow_.parameters())
print("flow on", parameter.device, "in", parameter.dtype)

# %%
# Results come back as numpy arrays
# ---------------------------------
# Inputs are numpy arrays on the host; flowpca moves them to the device in chunks sized
# by scikit-learn's ``working_memory`` and returns numpy arrays.
Y = model.transform(X)
print(type(Y).__name__, Y.shape, Y.dtype)

# %%
# Saved models load on any machine
# --------------------------------
# A pickled model stores its flow as numpy arrays on the CPU, so a model fitted on a
# GPU loads on a CPU-only machine, where it runs on the CPU.
restored = pickle.loads(pickle.dumps(model))
print("restored flow on", next(restored.flow_.parameters()).device)
print("same log-likelihoods:",
      bool(abs(restored.score_samples(X[:5]) - model.score_samples(X[:5])).max() < 1e-4))

# %%
# The training curve is the same kind of object on every device.
plot_loss_curve(model)
plt.show()
