"""Sphinx configuration of the flowpca documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``. No network
is needed: intersphinx is not used, so references to other projects stay plain text.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Document (and run the gallery against) the working tree, not an installed copy.
sys.path.insert(0, str(ROOT))

import flowpca  # noqa: E402

import torch  # noqa: E402
from sphinx.ext import autosummary  # noqa: E402

# The gallery trains small flows in this process: one thread keeps the build fast and its
# timings steady on shared CI machines (the examples themselves leave threads alone).
torch.set_num_threads(1)

project = "flowpca"
author = "The flowpca developers"
copyright = "The flowpca developers"
release = flowpca.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
# `text` in docstrings is code, as in scikit-learn's documentation.
default_role = "literal"

# -- autodoc / autosummary / numpydoc ---------------------------------------------------
autosummary_generate = True
# Modules list their members from __all__, so new public classes appear by themselves.
autosummary_ignore_module_all = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False



def _summary_keeping_literals(doc, settings, _extract=autosummary.extract_summary):
    """autosummary's one-line summary, or the whole first paragraph when the cut at the
    first ". " falls inside an ``inline literal`` (e.g. ``f(... g(x))``): Sphinx checks
    the docstring rather than the cut summary for broken markup."""
    summary = _extract(doc, settings)
    if summary.count("``") % 2 == 0:
        return summary
    paragraph = []
    for line in doc:
        if not line.strip():
            if paragraph:
                break
            continue
        paragraph.append(line.strip())
    return " ".join(paragraph)


autosummary.extract_summary = _summary_keeping_literals

# -- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("flowpca",),
    "reference_url": {"flowpca": None},
    "backreferences_dir": "api/generated/backreferences",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "show_memory": False,
    "plot_gallery": "True",
}

# -- HTML -------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"flowpca {release}"
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path = []
html_show_sourcelink = False
