"""Peak memory and time of per-point work vs the number of rows, with and without chunking,
and the cost of the linear-algebra routes of ``flowpca._linalg``.

Each measurement runs in a fresh interpreter (peak RSS only grows within a process): the
extra peak memory of one call is the kernel's high-water mark after the call minus the
resident memory before it (``/proc/self/status``: VmHWM after resetting it, VmRSS).
"Unchunked" sets scikit-learn's ``working_memory`` to 1 TiB, so every call is one chunk.

Writes ``benchmarks/results/memory.md`` and ``.csv``; asserts nothing.
Usage: ``python benchmarks/memory.py [--quick]``.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SEED = 0

_WORKER = """
import json, pickle, time, warnings
import numpy as np, sklearn, torch
torch.set_num_threads(1)
from flowpca import NormalizingFlowPCA

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MiB

args = json.loads({args!r})
model = pickle.load(open(args["model"], "rb"))
X = np.random.RandomState(1).normal(size=(args["n"], args["d"]))
getattr(model, args["op"])(X[:8])  # warm-up
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
before = status("VmRSS")
with sklearn.config_context(working_memory=args["working_memory"]):
    start = time.perf_counter()
    out = getattr(model, args["op"])(X)
    seconds = time.perf_counter() - start
print(json.dumps({{"peak_mib": status("VmHWM") - before, "seconds": seconds,
                  "output_mib": out.nbytes / 2**20}}))
"""

_FIT = """
import pickle, warnings
import numpy as np, torch
torch.set_num_threads(1)
from flowpca import NormalizingFlowPCA
d = {d}
X = np.random.RandomState({seed}).normal(size=(400, d)) * np.linspace(2.0, 0.5, d)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = NormalizingFlowPCA(n_layers=4, max_iter=2, random_state={seed}).fit(X)
pickle.dump(model, open({path!r}, "wb"))
print("{{}}")
"""

_LINALG = """
import json, time
import torch
torch.set_num_threads({threads})
from flowpca import _linalg
g = torch.Generator().manual_seed({seed})
A = torch.randn({batch}, {n}, {n}, dtype=torch.float64, generator=g)
routes = {{
    "guarded (_linalg.slogdet)": lambda: _linalg.slogdet(A),
    "loop of 2-D calls": lambda: [torch.linalg.slogdet(a) for a in A],
    "QR-based": lambda: torch.linalg.qr(A)[1].diagonal(dim1=-2, dim2=-1).abs().log().sum(-1),
}}
if {threads} == 1:
    routes["torch batched (1 thread)"] = lambda: torch.linalg.slogdet(A)
out = {{}}
for name, fn in routes.items():
    fn()
    times = []
    for _ in range(5):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    out[name] = sorted(times)[2] * 1e3
print(json.dumps(out))
"""


def run(code, timeout=600):
    # glibc's malloc otherwise keeps freed chunk buffers on its heap (RSS that is not live
    # data, varying run to run): a fixed mmap threshold returns them to the system.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                               capture_output=True, text=True, timeout=timeout, env=env)
    if completed.returncode:
        raise RuntimeError(completed.stderr[-2000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller sizes")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    score_rows = [1_000, 10_000] if args.quick else [1_000, 5_000, 20_000, 50_000]
    # transform costs a D x D SVD per row (~2 ms at D=128 on one core): fewer rows.
    transform_rows = {64: [250, 1_000] if args.quick else [1_000, 5_000],
                      256: [100, 250] if args.quick else [250, 1_000]}
    rows = []
    for d in (64, 256):
        model_path = str(RESULTS / f"_memory_model_{d}.pkl")
        run(_FIT.format(d=d, seed=SEED, path=model_path))
        for op, sizes in [("score_samples", score_rows),
                          ("transform", transform_rows[d])]:
            for n in sizes:
                for label, memory in [("chunked (32 MiB)", 32), ("unchunked", 2**20)]:
                    result = run(_WORKER.format(args=json.dumps(dict(
                        model=model_path, n=n, d=d, op=op, working_memory=memory))))
                    rows.append(dict(D=d, op=op, n=n, chunking=label, **result))
                    print(rows[-1], flush=True)
        os.remove(model_path)

    linalg_rows = []
    sizes = [(8, 64), (8, 256)] if args.quick else [(2, 64), (64, 64), (8, 160), (64, 256)]
    for batch, n in sizes:
        for threads in (1, 2):
            timings = run(_LINALG.format(threads=threads, seed=SEED, batch=batch, n=n))
            for route, ms in timings.items():
                linalg_rows.append(dict(batch=batch, n=n, threads=threads, route=route,
                                        ms=ms))
                print(linalg_rows[-1], flush=True)

    import numpy
    import torch

    import flowpca
    header = (f"# Memory and linear-algebra routes\n\n- flowpca {flowpca.__version__}, torch "
              f"{torch.__version__}, numpy {numpy.__version__}, {platform.platform()}, "
              f"{os.cpu_count()} CPUs; 1 intra-op thread for the memory runs; seed {SEED}\n"
              "- model: MLP flow, 4 layers, fitted for 2 epochs on 400 rows (fit time not "
              "measured); peak = extra high-water RSS of one call (MiB), glibc mmap threshold "
              "fixed at 1 MiB\n\n")
    table = ["| D | op | n | chunking | peak MiB | output MiB | seconds |",
             "|---:|---|---:|---|---:|---:|---:|"]
    table += [f"| {r['D']} | {r['op']} | {r['n']} | {r['chunking']} | {r['peak_mib']:.1f} "
              f"| {r['output_mib']:.1f} | {r['seconds']:.2f} |" for r in rows]
    table += ["", "slogdet of a (batch, n, n) float64 stack, median of 5 (ms); the torch "
              "batched call with 2 threads is not run at n >= 150 (wrong or hangs):", "",
              "| batch | n | threads | route | ms |", "|---:|---:|---:|---|---:|"]
    table += [f"| {r['batch']} | {r['n']} | {r['threads']} | {r['route']} | {r['ms']:.2f} |"
              for r in linalg_rows]
    text = header + "\n".join(table) + "\n"
    (RESULTS / f"memory{suffix}.md").write_text(text)
    with open(RESULTS / f"memory{suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(text)


if __name__ == "__main__":
    main()
