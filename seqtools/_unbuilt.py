"""The error ``import seqtools`` raises from a source folder whose compiled
modules are not built.

A clone of the repository holds ``seqtools/`` with the Cython sources of the
compiled modules (``_*.pyx``) but not, until something builds them, the
modules. Run from the clone's root (or a script in it), Python finds that folder
first on ``sys.path`` and imports it instead of any installed seqtools, and the
first compiled import fails with a message about names or circular imports.
``seqtools/__init__.py`` imports this module only after its own imports failed,
so a working import never pays for the check.
"""

import importlib.machinery
import os
import platform
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def unbuilt_modules():
    """The compiled modules whose ``.pyx`` source lies in the package folder
    with no extension module beside it for this interpreter, and how many
    ``.pyx`` sources there are.

    A wheel or ``pip install .`` ships no ``.pyx`` files, and an in-place build
    (``pip install -e .``) puts the extension next to each: in both, nothing is
    missing.
    """
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    root = os.path.dirname(PACKAGE_DIR)
    missing, sources = [], 0
    for folder, subfolders, files in os.walk(PACKAGE_DIR):
        subfolders[:] = [s for s in subfolders if s != "__pycache__"]
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext != ".pyx":
                continue
            sources += 1
            built = (os.path.join(folder, stem + s) for s in suffixes)
            if not any(os.path.exists(path) for path in built):
                module = os.path.relpath(os.path.join(folder, stem), root)
                missing.append(module.replace(os.sep, "."))
    return sorted(missing), sources


def _installed_elsewhere(root):
    """The folder of a seqtools package found on ``sys.path`` outside *root*,
    or None. Only path entries are searched: an editable install of another
    clone, found through its own finder, is not seen."""
    others = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("seqtools", others)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def source_folder_error():
    """The ImportError to raise instead of the one that stopped
    ``import seqtools``, or None if the package folder is not a source folder
    with unbuilt modules (then the original error says what is wrong)."""
    missing, sources = unbuilt_modules()
    if not missing:
        return None
    root = os.path.dirname(PACKAGE_DIR)
    python = "{} {}.{}{}".format(
        platform.python_implementation(), *sys.version_info[:2],
        getattr(sys, "abiflags", ""))
    if len(missing) == sources:
        what = f"none of its {sources} Cython sources (_*.pyx) has an extension module"
    else:
        what = "{} {} no extension module".format(
            ", ".join(missing), "has" if len(missing) == 1 else "have")
    lines = [
        f"`import seqtools` found the source folder {PACKAGE_DIR}, whose compiled "
        f"modules are not built: {what} for this Python ({python}).",
    ]
    real_root = os.path.realpath(root)
    if any(os.path.realpath(p or os.curdir) == real_root for p in sys.path):
        installed = _installed_elsewhere(real_root)
        lines += [
            f"Its parent {root} is on sys.path (the current directory, the "
            "script's folder or PYTHONPATH), so this folder shadows any installed "
            "seqtools"
            + (f" (here: {installed})." if installed else
               " (no other seqtools is on sys.path)."),
            "Two ways out:",
            "  - run Python from another directory (and scripts from outside "
            f"{root}) to import the installed seqtools; `pip install {root}` "
            "installs one;",
            "  - or build the compiled modules in place, to use this folder: "
            f"`pip install -e {root}`.",
        ]
    else:
        # Found through an editable install's finder, not sys.path: the install
        # lacks extensions (for a .pyx new since it was built, say).
        lines.append(f"Build them in place again: `pip install -e {root}`.")
    return ImportError("\n".join(lines), name="seqtools")
