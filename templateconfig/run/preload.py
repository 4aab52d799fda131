"""What the runner imports once, before it forks, so that forked module processes need not.

A Python module process is a fork of the runner (:mod:`templateconfig.run.child`), so
whatever the runner imported is already imported in the module: the modules of the
module API (``templateconfig.cli``, ``templateconfig.common``), the standard modules and
their shared code (every module of the ``templateconfig.modules`` package, sub-packages
included), and the platform code a module picks at run time (``templateconfig.platform``).
``simplejson`` is left out: Oracle-style modules only import it when ``json`` is missing.
``pkgutil`` is what ``runpy.run_path`` imports in every child (``get_importer``).

The packages are listed by walking their directories: ``pkgutil.iter_modules`` would
import ``inspect``, start-up time for nothing.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterator, List, Tuple

log = logging.getLogger(__name__)

PRELOAD = ("json", "runpy", "pkgutil", "io", "traceback", "atexit",
           "templateconfig.cli", "templateconfig.common", "templateconfig.header")
PRELOAD_PACKAGES = ("templateconfig.modules", "templateconfig.platform")

_done = False


def preloaded() -> bool:
    """True once :func:`preload` ran in this process."""
    return _done


def preload() -> None:
    """Import once what module processes import, so forked children need not."""
    global _done
    if _done:
        return
    _done = True
    import importlib
    names = list(PRELOAD)
    for package in PRELOAD_PACKAGES:
        names.append(package)
        names.extend(package_modules(package))
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken optional import must not stop the runner
            log.debug("preload of %s failed: %s", name, exc)


def preload_while(work: Callable[[], None]) -> None:
    """:func:`preload` while ``work`` (the PBKDF2 of the run state, which releases the
    GIL) runs in a thread: the imports hold the GIL, so on two CPUs the work costs
    nothing. The thread is over before this returns (nothing is forked while it runs);
    an exception in it is logged, and the work is redone when it is needed."""
    import threading

    def quietly() -> None:
        try:
            work()
        except Exception as exc:
            log.debug("work done while preloading failed: %s", exc)

    worker = threading.Thread(target=quietly, name="ovm-template-config-prepare", daemon=True)
    worker.start()
    try:
        preload()
    finally:
        worker.join()


def python_files(directory: str, prefix: str = "") -> Iterator[Tuple[str, os.DirEntry]]:
    """``(dotted name, entry)`` of every module file of the package in ``directory`` and
    of its sub-packages (directories with an ``__init__.py``), in name order; a
    sub-package's ``__init__.py`` is named after the sub-package, the package's own
    ``__init__.py`` is ``""``."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith(".py") and entry.name[:-3].isidentifier() \
                and entry.is_file():
            name = entry.name[:-3]
            yield (prefix[:-1] if name == "__init__" else prefix + name), entry
        elif entry.name.isidentifier() and entry.is_dir() \
                and os.path.isfile(os.path.join(entry.path, "__init__.py")):
            yield from python_files(entry.path, prefix + entry.name + ".")


def package_modules(package: str) -> List[str]:
    """The modules of ``package`` and of its sub-packages, by their files."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    names = set()
    for directory in spec.submodule_search_locations:
        for name, _entry in python_files(directory):
            if name:
                names.add("%s.%s" % (package, name))
    return sorted(names)
