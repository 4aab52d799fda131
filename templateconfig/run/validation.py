"""Validating a run's params before any module starts: every problem at once.

Two sources, per module, in run order (docs/module-contract.md, "Validation"):

descriptors
    every module's enumerate output: ``required`` (a key an earlier successful run
    applied counts as given, :mod:`templateconfig.run.applied`), ``choices``, and
    ``depends``/``requires`` deciding whether a descriptor applies.
specs
    a standard module (its header names its spec, :mod:`templateconfig.run.scripts`) is
    checked with its own declaration, in the runner's process, on the guest but without
    changing it (:func:`templateconfig.common.viewing`): each key's validator, then the
    module's checks across keys and against the guest (an account, a time zone, a
    device). A problem the spec reports is not reported twice.

Every problem reads ``MODULE: KEY: REASON``; a secret value is never shown.
"""
from __future__ import annotations

import logging
from typing import (
    TYPE_CHECKING,
    Collection,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

if TYPE_CHECKING:
    from templateconfig.modules.support.spec import ModuleSpec

log = logging.getLogger(__name__)

#: A module of the run: (name, its descriptors, its spec or None).
Checked = Tuple[str, List[dict], "Optional[ModuleSpec]"]


def _key(problem: str) -> str:
    """The key of a problem ``MODULE: KEY: REASON``."""
    parts = problem.split(": ", 2)
    return parts[1] if len(parts) == 3 else ""


def spec_problems(name: str, spec: ModuleSpec, params: Mapping[str, str], target: str,
                  modules: Collection[str], secret_keys: Set[str]) -> List[str]:
    """``spec``'s problems with ``params`` (its own validation: keys and checks), each
    prefixed with the module's name. Call it within :func:`templateconfig.common.viewing`.
    A check that cannot run (an unsupported guest, a bug) is a problem too."""
    from templateconfig.errors import TemplateConfigError
    from templateconfig.modules.support.spec import CheckContext

    try:
        found = spec.validate({k: v for k, v in params.items() if isinstance(v, str)}, target,
                              CheckContext(modules), secret_keys)
    except TemplateConfigError as exc:
        return ["%s: %s" % (name, " ".join(str(exc).split()))]
    except Exception as exc:  # a bug in a check: the module would fail the same way
        log.debug("%s: the check of the params failed", name, exc_info=True)
        return ["%s: cannot check the params: %s: %s" % (name, type(exc).__name__, exc)]
    return ["%s: %s" % (name, problem) for problem in found]


def problems(modules: Sequence[Checked], params: Mapping[str, str], target: str, root: str,
             given: Iterable[str] = ()) -> List[str]:
    """Every problem with ``params`` for the run of ``modules`` under ``root``; empty
    when the run may start. ``given``: keys that count as given (see the docstring)."""
    from templateconfig import common
    from templateconfig.descriptors import password_keys, validate_params

    enumeration = [(name, descs) for name, descs, _spec in modules]
    specs = [(name, spec) for name, _descs, spec in modules if spec is not None]
    by_descriptors = validate_params(enumeration, params, given,
                                     values_checked=[name for name, _ in specs])
    by_spec = {}
    if specs:
        secret_keys = password_keys(enumeration)
        names = [spec.name for _, spec in specs]
        with common.viewing(root):
            for name, spec in specs:
                by_spec[name] = spec_problems(name, spec, params, target, names, secret_keys)
    found = []
    for name, _descs, _spec in modules:
        own = by_spec.get(name, [])
        keys = {_key(problem) for problem in own}
        found += own + [p for p in by_descriptors
                        if p.startswith(name + ": ") and _key(p) not in keys]
    return found
