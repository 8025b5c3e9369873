"""The README's figure: nonlinear components on the paper's sine wave, next to PCA's.

Fits the default ``NormalizingFlowPCA`` (and the linear flow, i.e. PCA) on 2 000 points of
the paper's 3-D sine wave (docs/contributing.rst, seed 0) and draws the data coloured by
the components, with the local principal directions as arrows
(:func:`flowpca.plotting.plot_components`). Writes
``benchmarks/results/readme_sine_components.png`` and prints the |Spearman| of each
component with the latent factors.

Run: ``python benchmarks/readme_figure.py`` (about a minute on one CPU thread).
"""

import argparse
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import flowpca  # noqa: E402
from flowpca import NormalizingFlowPCA  # noqa: E402
from flowpca.datasets import make_sine_wave  # noqa: E402
from flowpca.plotting import plot_components  # noqa: E402

SEED = 0
N_SAMPLES = 2000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).parent / "results"
                        / "readme_sine_components.png")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X, latent = make_sine_wave(N_SAMPLES, random_state=SEED)
        start = time.process_time()
        flow = NormalizingFlowPCA(n_components=2, random_state=SEED, flow="mlp").fit(X)
        seconds = time.process_time() - start
        pca = NormalizingFlowPCA(n_components=2, flow="linear").fit(X)
        for name, model in (("flow", flow), ("PCA", pca)):
            Y = model.transform(X)
            rho = [abs(spearmanr(Y[:, i], latent[:, i])[0]) for i in range(2)]
            print(f"{name}: |Spearman| component 1 vs eps1 {rho[0]:.3f}, "
                  f"component 2 vs eps2 {rho[1]:.3f}")
        print(f"flow fit: {seconds:.1f} CPU s, {flow.n_iter_} epochs "
              f"(flowpca {flowpca.__version__}, torch {torch.__version__}, seed {SEED})")

        figure = plt.figure(figsize=(14, 4.4), layout="constrained")
        axes = [figure.add_subplot(1, 3, i + 1, projection="3d") for i in range(3)]
        plot_components(flow, X, ax=axes[:2], n_arrows=30)
        plot_components(pca, X, ax=axes[2], color_by=1, n_arrows=30)
        axes[0].set_title("NormalizingFlowPCA: component 1")
        axes[1].set_title("NormalizingFlowPCA: component 2")
        axes[2].set_title("PCA: component 2")
        for axis in axes:  # look along x2, across the sheet: the sine shows
            axis.view_init(elev=12, azim=-80)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out, dpi=90)
        print(f"wrote {args.out}")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
