"""Smoke tests of the benchmark scripts' ``--quick`` modes: each runs in a subprocess
into a temporary folder and writes its tables. Quality claims are tested elsewhere."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name, *args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, str(BENCHMARKS / name), "--quick", *args],
                               cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_compare_lists_every_registered_flow_family(tmp_path):
    from flowpca.flows._families import family_names

    listing = run_script("compare.py", "--list", cwd=tmp_path).stdout
    for family in family_names():
        assert (f"nfpca-{family}-alpha0" in listing and f"nfpca-{family}-tuned" in listing
                ) or f"nfpca-{family} " in listing and "not available (ImportError" in listing


def test_compare_quick_writes_its_tables(tmp_path):
    # Two data sets (3-D and 64-D) and the baselines with the reference flows keep CI
    # short (the other flow families are listed above).
    run_script("compare.py", "--datasets", "s_curve,digits", "--methods",
               "pca,kpca,isomap,lle,gmm,kde,nfpca-linear-*,nfpca-mlp-*", "--out",
               str(tmp_path), "--jobs", "2", cwd=tmp_path)
    with open(tmp_path / "compare_quick.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["dataset"] for row in rows} == {"s_curve", "digits"}
    methods = {row["key"] for row in rows}
    assert {"pca", "kpca", "isomap", "lle", "gmm", "kde", "nfpca-linear-alpha0",
            "nfpca-linear-tuned", "nfpca-mlp-alpha0", "nfpca-mlp-tuned"} <= methods
    pca = next(r for r in rows if r["key"] == "pca" and r["dataset"] == "s_curve")
    assert pca["status"] == "ok" and float(pca["test_ll"]) < 0
    text = (tmp_path / "compare_quick.md").read_text()
    assert "| s_curve | PCA | ok |" in text and "## Head to head" in text
    # Draws of the density models on the noise-free S-curve: their distance to it (none
    # for PCA, which cannot sample, nor on digits, whose manifold is unknown).
    by_key = {(r["dataset"], r["key"]): r for r in rows}
    for key in ("gmm", "kde", "nfpca-mlp-tuned"):
        row = by_key[("s_curve", key)]
        assert row["off_manifold"] != "" or "off-manifold distance not computed" in row[
            "notes"]
    assert float(by_key[("s_curve", "gmm")]["off_manifold"]) >= 0
    assert float(by_key[("s_curve", "gmm")]["off_manifold_median"]) >= 0
    assert by_key[("s_curve", "pca")]["off_manifold"] == ""
    assert by_key[("digits", "gmm")]["off_manifold"] == ""
    assert "- s_curve: curve grid of" in text


def test_compare_merge_later_rows_replace_earlier_ones(tmp_path):
    header = "dataset,n,method,key,family,status,test_ll,off_manifold\n"
    (tmp_path / "old.csv").write_text(header + "sine,300/200,PCA,pca,,ok,-3.5,\n"
                                      "sine,300/200,KernelDensity,kde,,ok,-3.0,\n")
    (tmp_path / "new.csv").write_text(header + "sine,300/200,KernelDensity,kde,,ok,-2.0,"
                                      "0.25\n")
    run_script("compare.py", "--datasets", "sine", "--merge", str(tmp_path / "old.csv"),
               str(tmp_path / "new.csv"), "--out", str(tmp_path), cwd=tmp_path)
    with open(tmp_path / "compare_quick.csv") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"pca", "kde"}
    assert rows["kde"]["test_ll"] == "-2.0" and rows["kde"]["off_manifold"] == "0.25"
    assert rows["pca"]["test_ll"] == "-3.5" and rows["pca"]["off_manifold"] == ""


def test_compare_reports_a_failing_method_in_its_row(tmp_path):
    # alpha = 0 on data in a plane: the flow cannot be fitted; the row says why.
    run_script("compare.py", "--datasets", "embedded_plane", "--methods",
               "nfpca-linear-alpha0", "--out", str(tmp_path), "--jobs", "1", cwd=tmp_path)
    with open(tmp_path / "compare_quick.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"].startswith("error in fit: ValueError")
    assert "singular" in row["status"]


def test_compare_stops_training_at_the_cpu_budget(tmp_path):
    # Far more steps than the quick budget's 3 CPU s allow: the budget ends training, the
    # model is kept (the row is scored) and the row says so.
    run_script("compare.py", "--datasets", "sine", "--methods", "nfpca-mlp-alpha0",
               "--flow-steps", "1000000", "--out", str(tmp_path), "--jobs", "1",
               cwd=tmp_path)
    with open(tmp_path / "compare_quick.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] in {"ok", "warning"}
    assert '"cpu_budget_reached": true' in row["params"]
    assert 2.0 <= float(row["fit_s"]) < 60 and float(row["test_ll"]) > -10


def test_grid_search_quick_writes_table_and_figure(tmp_path):
    run_script("grid_search_alpha.py", "--out", str(tmp_path), cwd=tmp_path)
    assert "Chosen alpha" in (tmp_path / "grid_search_alpha_quick.md").read_text()
    assert (tmp_path / "grid_search_alpha_quick.png").stat().st_size > 0


def test_paper_quick_writes_claims_and_figures(tmp_path):
    run_script("paper.py", "--out", str(tmp_path), cwd=tmp_path)
    text = (tmp_path / "paper_quick.md").read_text()
    assert "| Linear flow = PCA (closed form)" in text
    for figure in ("paper_fig3_s_curve.png", "paper_fig3_sine.png",
                   "paper_local_variances.png", "paper_learning_curves.png"):
        assert (tmp_path / figure).stat().st_size > 0


def test_defaults_quick_writes_table_csv_and_figure(tmp_path):
    # A noisy set and the paper's banana (whose round trip is measured); the curve on the
    # noisy moons only.
    run_script("defaults.py", "--datasets", "moons_noisy,banana", "--curve-datasets",
               "moons_noisy", "--out", str(tmp_path), cwd=tmp_path)
    with open(tmp_path / "defaults_quick.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["dataset"], r["method"]) for r in rows} == {
        (d, m) for d in ("moons_noisy", "banana") for m in ("default", "gmm", "kde", "zuko")}
    for row in rows:
        assert not row["status"].startswith("error"), row
        assert math.isfinite(float(row["test_ll"])) and float(row["fit_s"]) >= 0
    round_trips = {r["dataset"]: r["round_trip"] for r in rows if r["method"] == "default"}
    assert round_trips["moons_noisy"] == "" and 0 <= float(round_trips["banana"]) <= 1
    text = (tmp_path / "defaults_quick.md").read_text()
    assert "| moons_noisy | 300/300, D=2 |" in text and "default − GMM" in text
    assert "## Round trips" in text and "| banana | 0 | 300 |" in text
    with open(tmp_path / "defaults_quick_curve.csv") as handle:
        families = {r["family"] for r in csv.DictReader(handle)}
    assert families == {"mlp", "nsf", "gmm"}
    assert (tmp_path / "defaults_quick.png").stat().st_size > 0


def test_intrinsic_dimension_quick_writes_its_tables(tmp_path):
    run_script("intrinsic_dimension.py", "--out", str(tmp_path), "--cache",
               str(tmp_path / "cache"), "--jobs", "1", cwd=tmp_path)
    with open(tmp_path / "intrinsic_dimension_quick.csv") as handle:
        rows = list(csv.DictReader(handle))
    # Four manifolds, each with the default estimator and the two other families.
    assert len(rows) == 12 and {row["flow"] for row in rows} == {"default", "maf", "mlp"}
    for row in rows:
        assert 1 <= int(row["flowpca"]) <= int(row["D"])
        assert 1 <= int(row["gap_0.6_min10"]) <= int(row["D"])
        assert row["flowpca"] == row["gap_0.6_min10"]  # the package's constants
    text = (tmp_path / "intrinsic_dimension_quick.md").read_text()
    assert "## Choosing the rule (training half)" in text and "| helix | 1 | 3 | test |" in text
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 12  # a rerun reads them back


def test_injective_quick_writes_its_tables(tmp_path):
    run_script("injective.py", "--out", str(tmp_path), "--jobs", "1", cwd=tmp_path)
    with open(tmp_path / "injective_quick.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["manifold"] for row in rows] == ["circle", "sphere"]
    for row in rows:
        assert row["status"] == "ok" and float(row["mean"]) >= 0
        assert 0 <= float(row["within"]) <= 1
    assert "## Per manifold" in (tmp_path / "injective_quick.md").read_text()
