"""Latent-factor recovery on the two S-curves: the paper's (Gaussian t) and
scikit-learn's ``make_s_curve`` (uniform t), for PCA, Isomap and NormalizingFlowPCA.

Prints a Markdown table and writes it to ``benchmarks/results/s_curve_recovery.md``.
Asserts nothing. Usage: ``python benchmarks/s_curve_recovery.py [--quick]``.
"""

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy.stats import spearmanr
from sklearn.datasets import make_s_curve
from sklearn.decomposition import PCA
from sklearn.manifold import Isomap

import flowpca
from flowpca import NormalizingFlowPCA
from flowpca.datasets import make_s_curve_gaussian

RESULTS = Path(__file__).parent / "results"


def sklearn_s_curve(n_samples, random_state):
    X, t = make_s_curve(n_samples, noise=0.0, random_state=random_state)
    return X, np.column_stack([t, X[:, 1]])  # t along the curve, the height


def recovery(Y, latent):
    return [abs(spearmanr(Y[:, i], latent[:, i])[0]) for i in range(2)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer points")
    args = parser.parse_args()
    n_train, seeds = (1000, [0]) if args.quick else (2000, [0, 1, 2])
    rows = []
    for data_name, make in [("paper S-curve (Gaussian t)", make_s_curve_gaussian),
                            ("make_s_curve (uniform t)", sklearn_s_curve)]:
        for seed in seeds:
            X, latent = make(n_train + 1000, random_state=seed)
            X_train, X_test, latent_test = X[:n_train], X[n_train:], latent[n_train:]
            models = {
                "PCA": PCA(n_components=2),
                "Isomap (10 neighbours)": Isomap(n_components=2, n_neighbors=10),
                "NormalizingFlowPCA (linear)": NormalizingFlowPCA(2, flow="linear"),
                "NormalizingFlowPCA (default)": NormalizingFlowPCA(2, random_state=seed),
            }
            for name, model in models.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(X_train)
                seconds = time.perf_counter() - start
                rho = recovery(model.transform(X_test), latent_test)
                score = model.score(X_test) if isinstance(model, NormalizingFlowPCA) \
                    else float("nan")
                rows.append((data_name, seed, name, rho[0], rho[1], score, seconds))
                print(rows[-1])
    header = (f"# S-curve recovery\n\n- flowpca {flowpca.__version__}, scikit-learn "
              f"{sklearn.__version__}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {platform.platform()}\n"
              f"- {n_train} training / 1000 test points per seed; seeds {seeds}; "
              "|rho|: Spearman of component 1 with t and component 2 with the height on "
              "the test points; test LL in nats/sample (density models only)\n\n")
    table = ["| data | seed | method | |rho| t | |rho| height | test LL | fit s |",
             "|---|---:|---|---:|---:|---:|---:|"]
    table += [f"| {d} | {s} | {m} | {a:.3f} | {b:.3f} | {ll:.3f} | {sec:.1f} |"
              for d, s, m, a, b, ll, sec in rows]
    text = header + "\n".join(table) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("s_curve_recovery_quick.md" if args.quick else "s_curve_recovery.md")
     ).write_text(text)


if __name__ == "__main__":
    main()
