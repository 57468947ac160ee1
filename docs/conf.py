"""Sphinx configuration for the seqtools documentation.

Build, warnings being errors::

    sphinx-build -W --keep-going -b html docs docs/_build/html

``bash .ci/docs`` builds the docs and runs every example (docstrings and pages).

autodoc imports the *installed* seqtools (the compiled extensions are needed), so
install the package first: ``pip install -e '.[docs]'``.
"""

import seqtools

project = "seqtools"
author = "the seqtools developers"
copyright = "seqtools developers"
release = seqtools.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# benchmarks/results.md (written by the benchmark runner, with any other Markdown
# beside it) is included by benchmarks/index.rst, not a page of its own.
exclude_patterns = ["_build", "benchmarks/*.md", "Thumbs.db", ".DS_Store"]

# -- autodoc / numpydoc ---------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc docstrings carry the types
numpydoc_show_class_members = False  # classes list their methods explicitly
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()

# -- MyST (benchmark results are written in Markdown by the benchmark runner) --------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
# results.md may start at any heading level: it is nested in benchmarks.rst.
suppress_warnings = ["myst.header"]

# -- doctest builder (tutorial and guide pages) --------------------------------------
doctest_global_setup = """
import multiprocessing

import numpy as np
import seqtools

try:  # optional: the pages' torch examples are skipped without it
    import torch
except ImportError:
    torch = None

# Examples define samplers in the doctest namespace, which workers started by
# "spawn" or "forkserver" (Linux's default from Python 3.14) cannot import: run
# them with "fork", as a script does on Linux up to Python 3.13.
if "fork" in multiprocessing.get_all_start_methods():
    multiprocessing.set_start_method("fork", force=True)
"""
# Docstring examples are run by pytest --doctest-modules (see .ci/docs); here only
# the examples written in the pages themselves (``.. doctest::``, ``.. testcode::``)
# are tested.
doctest_test_doctest_blocks = ""

# -- HTML -----------------------------------------------------------------------------
html_theme = "furo"
html_title = f"seqtools {release}"
html_static_path = ["_static"]
pygments_style = "sphinx"
pygments_dark_style = "monokai"
