"""What every benchmark report states: versions, machine, threads, seeds; and the
Markdown/CSV writers."""

import csv
import datetime
import os
import platform
import sys
from contextlib import contextmanager

import numpy as np
import sklearn
import torch
from threadpoolctl import threadpool_limits

import flowpca


def environment(threads):
    """Versions and machine, as ``name: value`` lines for a report header."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "flowpca": flowpca.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.platform()}, {os.cpu_count()} cores",
        "threads": f"{threads} (torch intra-op and BLAS)",
        "load average at start": load,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }


def header_lines(env):
    return [f"- {name}: {value}" for name, value in env.items()]


@contextmanager
def limited_threads(threads):
    """Run with ``threads`` torch intra-op and BLAS threads; restore torch's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(previous)


def _cell(value, digits=3):
    if value is None:
        return ""
    if isinstance(value, float):
        if np.isnan(value):
            return ""
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns, rows, digits=3):
    """A Markdown table of ``rows`` (dicts) with ``columns`` as ``(key, title)`` pairs."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), digits) for key, _ in columns)
                     + " |")
    return "\n".join(lines)


def write_csv(path, rows, keys):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in keys})
