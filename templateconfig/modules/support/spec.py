"""Declaring a standard module once: its name, targets, priorities and keys.

Each standard module (``templateconfig/modules/<name>.py``) builds one
:class:`ModuleSpec` and registers a handler per target. The enumerate output, the
validation of every value before anything is touched, and the glue to Oracle's module
contract (:func:`templateconfig.cli.main`) all come from that one declaration; the script
under ``template.d/scripts/<name>`` only calls ``SPEC.main()``, and its header names the
spec (``# spec: templateconfig.modules.<name>``), so that the runner validates the params
with it before any module of a run starts (docs/module-contract.md, "Validation").

Validation (:meth:`ModuleSpec.validate`) is each key's own check (choices, validator),
then the module's *checks* (:meth:`ModuleSpec.check`): what needs several keys or the
guest (a static interface without an address, a group no one creates, a device the guest
does not have). Checks only read the guest, through :mod:`templateconfig.common`, so the
runner can run them on the guest before anything changes. Every problem reads
``KEY: REASON`` (a secret value is never shown).

A handler takes the params (a dict of key -> string) and returns a dict of keys it adds
or changes (or ``None``); :meth:`ModuleSpec.run` merges them into the output, so the
runner can send them back to the host. A module may also register a *preparer* for a
target (:meth:`ModuleSpec.prepare`): work that needs no params, which the runner starts
before the params arrive (the header then says ``prepare: TARGET``).
"""
from __future__ import annotations

import json
import os
import sys
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from ovmd.secrets import is_secret_key
from templateconfig.common import TemplateConfigError, guest

Validator = Callable[[str], None]
Handler = Callable[[Dict[str, str]], Optional[Mapping[str, str]]]
Preparer = Callable[[], None]
#: The dotted module of a standard module's spec (a script header's ``spec`` field).
SPEC_PACKAGE = "templateconfig.modules."


class CheckContext:
    """What a module's checks know about the run: ``modules`` are the names of the
    standard modules taking part in it, None when unknown (inside the module process,
    where the others are assumed to run, in their order)."""

    def __init__(self, modules: Optional[Collection[str]] = None) -> None:
        self.modules = None if modules is None else frozenset(modules)

    def runs(self, name: str) -> bool:
        """True if module ``name`` takes part in the run (or that is not known)."""
        return self.modules is None or name in self.modules


Check = Callable[[Dict[str, str], CheckContext], Iterable[str]]


class ValidationError(TemplateConfigError):
    """One or more params are invalid; the message names each key (and value, unless
    secret), on one line: ``invalid parameters: KEY: REASON; KEY: REASON``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid parameters: " + "; ".join(self.problems))


class Key:
    """One parameter a module understands.

    ``key`` may contain ``{n}`` for indexed keys (``com.oracle.linux.network.device.{n}``);
    ``depends``/``requires`` may use ``{n}`` too. ``validate`` raises ``ValueError`` with
    the reason for a bad value. ``targets`` are the targets whose enumerate lists the key.
    ``visible_indices``: for indexed keys, how many indices are enumerated with the
    key's own flags; later ones (up to the spec's ``enumerate_count``) are hidden.
    """

    def __init__(self, key: str, description: str, *, hidden: bool = False,
                 required: bool = False, password: bool = False,
                 depends: Optional[str] = None,
                 requires: Optional[Tuple[str, Sequence[str]]] = None,
                 choices: Optional[Sequence[str]] = None, default: Optional[str] = None,
                 validate: Optional[Validator] = None,
                 targets: Sequence[str] = ("configure",), visible_indices: int = 1) -> None:
        self.key = key
        self.description = description
        self.hidden = hidden
        self.required = required
        self.password = password
        self.depends = depends
        self.requires = requires
        self.choices = list(choices) if choices is not None else None
        self.default = default
        self.validate = validate
        self.targets = tuple(targets)
        self.visible_indices = visible_indices
        self.indexed = "{n}" in key
        # the text around {n}: matched with string tests, not a regex per key (compiling
        # dozens of them was a measurable part of every run's start-up)
        self._prefix, _, self._suffix = key.partition("{n}")

    def name(self, n: Optional[int] = None) -> str:
        return self.key.format(n=n) if self.indexed else self.key

    def match(self, name: str) -> Optional[int]:
        """The index ``name`` has for this key (-1 for a plain key), or None."""
        if not self.indexed:
            return -1 if name == self.key else None
        prefix, suffix = self._prefix, self._suffix
        if len(name) <= len(prefix) + len(suffix) or not name.startswith(prefix) \
                or not name.endswith(suffix):
            return None
        digits = name[len(prefix):len(name) - len(suffix)]
        # an index is 0 or digits without a leading 0 (ASCII only, as [0-9] was)
        if not (digits.isascii() and digits.isdigit()) or (digits[0] == "0" and digits != "0"):
            return None
        return int(digits)

    def descriptor(self, n: Optional[int] = None, force_hidden: bool = False) -> dict:
        """The enumerate descriptor (fields as in docs/module-contract.md), with only the
        fields that are set."""
        description = self.description
        if self.indexed and n is not None:  # "Name of user {n}." -> "Name of user 0."
            description = description.replace("{n}", str(n))
        desc: Dict[str, object] = {"key": self.name(n), "description": description}
        if self.hidden or force_hidden:
            desc["hidden"] = True
        if self.required:
            desc["required"] = True
        if self.password:
            desc["password"] = True
        if self.depends:
            desc["depends"] = self.depends.format(n=n)
        if self.requires:
            desc["requires"] = [self.requires[0].format(n=n), list(self.requires[1])]
        if self.choices is not None:
            desc["choices"] = list(self.choices)
        if self.default is not None:
            desc["default"] = self.default
        return desc

    def check(self, name: str, value: str, secret: bool = False) -> Optional[str]:
        """A problem message (``KEY: REASON``) for ``value``, or None when it is valid.
        ``secret``: the value must not be shown (the key is flagged ``password`` by
        some module); password keys and keys ovmd.secrets knows are never shown."""
        shown = "(hidden)" if secret or self.password or is_secret_key(name) else repr(value)
        if self.choices is not None and value not in self.choices:
            return "%s: value %s is not one of: %s" % (name, shown, ", ".join(self.choices))
        if self.validate is not None:
            try:
                self.validate(value)
            except ValueError as exc:
                return "%s: value %s is invalid: %s" % (name, shown, exc)
        return None


class ModuleSpec:
    """A module's name, targets with priorities, description and keys, declared once."""

    def __init__(self, name: str, targets: Mapping[str, int], description: str,
                 keys: Iterable[Key] = (), enumerate_count: int = 1,
                 needs_root: bool = False) -> None:
        self.name = name
        #: the module's tools need root (shadow-utils, chown): without root it plans only
        self.needs_root = needs_root
        self.targets = dict(targets)
        self.description = description
        self.keys = list(keys)
        self.enumerate_count = enumerate_count
        self.handlers: Dict[str, Handler] = {}
        self.preparers: Dict[str, Preparer] = {}
        self.checks: Dict[str, List[Check]] = {}

    @property
    def spec_module(self) -> str:
        """The dotted module a script header names in its ``spec`` field."""
        return SPEC_PACKAGE + self.name

    # --- declaration -------------------------------------------------------------------
    def target(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator registering the handler of target ``name``."""
        return self._registrar(self.handlers, name)

    def prepare(self, name: str) -> Callable[[Preparer], Preparer]:
        """Decorator registering the preparer of target ``name``: called, without params,
        by ``SCRIPT --prepare TARGET`` (see :mod:`templateconfig.cli`)."""
        return self._registrar(self.preparers, name)

    def _registrar(self, table: Dict[str, Any], name: str) -> Callable[[Any], Any]:
        if name not in self.targets:
            raise ValueError("module %s does not declare target %r" % (self.name, name))

        def register(func: Any) -> Any:
            table[name] = func
            return func
        return register

    def check(self, target: str) -> Callable[[Check], Check]:
        """Decorator registering a check of ``target``'s params: ``check(params, context)``
        yields problems (``KEY: REASON``); it may read the guest, never change it. It
        gets only the params whose own keys are valid."""
        if target not in self.targets:
            raise ValueError("module %s does not declare target %r" % (self.name, target))

        def register(func: Check) -> Check:
            self.checks.setdefault(target, []).append(func)
            return func
        return register

    def header(self) -> str:
        """The ``### BEGIN PLUGIN INFO`` block for this module (tests compare scripts with it)."""
        from templateconfig.run.contract import PREPARE_FIELD

        lines = ["### BEGIN PLUGIN INFO", "# name: %s" % self.name]
        for target, priority in self.targets.items():
            lines.append("# %s: %d" % (target, priority))
        if self.preparers:
            lines.append("# %s: %s" % (PREPARE_FIELD, " ".join(self.preparers)))
        lines.append("# description: %s" % self.description)
        lines.append("# spec: %s" % self.spec_module)
        lines.append("### END PLUGIN INFO")
        return "\n".join(lines)

    # --- enumerate ----------------------------------------------------------------------
    def enumerate(self, target: str) -> List[dict]:
        out = []
        for key in self.keys:
            if target not in key.targets:
                continue
            if key.indexed:
                for n in range(max(self.enumerate_count, key.visible_indices)):
                    out.append(key.descriptor(n, force_hidden=n >= key.visible_indices))
            else:
                out.append(key.descriptor())
        return out

    # --- params -------------------------------------------------------------------------
    def key_for(self, name: str) -> Optional[Tuple[Key, int]]:
        for key in self.keys:
            n = key.match(name)
            if n is not None:
                return key, n
        return None

    def indices(self, params: Mapping[str, str], *patterns: str) -> List[int]:
        """Sorted indices N for which any of the indexed key ``patterns`` is in params."""
        found = set()
        for pattern in patterns:
            key = Key(pattern, "")
            for name in params:
                n = key.match(name)
                if n is not None:
                    found.add(n)
        return sorted(found)

    def validate(self, params: Mapping[str, str], target: str = "configure",
                 context: Optional[CheckContext] = None,
                 secret_keys: Iterable[str] = ()) -> List[str]:
        """Every problem with the params this module understands, for ``target``: each
        key's own check, then the module's checks (on the params whose keys are valid;
        a key already refused is not reported twice). ``secret_keys``: keys whose values
        must not be shown besides this module's password keys."""
        problems = []
        refused = set()
        hidden = set(secret_keys)
        for name in sorted(params):
            found = self.key_for(name)
            if found is None or target not in found[0].targets:
                continue
            value = params[name]
            if not isinstance(value, str):
                problem: Optional[str] = "%s: value must be a string, got %s" % (
                    name, type(value).__name__)
            else:
                problem = found[0].check(name, value, secret=name in hidden)
            if problem:
                problems.append(problem)
                refused.add(name)
        valid = {k: v for k, v in params.items() if k not in refused and isinstance(v, str)}
        for check in self.checks.get(target, ()):
            for problem in check(dict(valid), context or CheckContext()):
                if problem_key(problem) not in refused:
                    problems.append(problem)
        return problems

    # --- running -------------------------------------------------------------------------
    def run(self, target: str, params: Dict[str, str]) -> Dict[str, str]:
        """Validate, then run the target's handler; returns the resulting params."""
        problems = self.validate(params, target)
        if problems:
            raise ValidationError(problems)
        handler = self.handlers.get(target)
        result = dict(params)
        if handler is not None:
            files = guest()
            if self.needs_root and os.geteuid() != 0 and not files.dry_run:
                # A non-root run (the demo, a developer's sandbox) cannot use the tools:
                # fall back to plan mode, and say so rather than fail half-way.
                files.plan_only()
                sys.stderr.write("warning: %s: not running as root: planning only (dry "
                                 "run); nothing was changed\n" % self.name)
            changes = handler(dict(params))
            if changes:
                result.update({k: str(v) for k, v in changes.items()})
        return result

    def _contract_function(self, target: str) -> Callable[[str], str]:
        def do_target(param: str) -> str:
            params = json.loads(param) if param.strip() else {}
            if not isinstance(params, dict):
                raise ValidationError(["input must be a JSON object of key -> string"])
            return json.dumps(self.run(target, params))
        return do_target

    def do_enumerate(self, target: str) -> str:
        return json.dumps(self.enumerate(target))

    def main(self, argv: Optional[List[str]] = None) -> None:
        """Entry point for ``template.d/scripts/<name>``: Oracle's module contract."""
        from templateconfig import cli
        from templateconfig.common import log_warnings_to_stderr

        functions = {t: self._contract_function(t) for t in self.targets}
        log_warnings_to_stderr()
        if argv is not None:
            sys.argv = [sys.argv[0]] + list(argv)
        cli.main(self.do_enumerate, functions, prepare=self.preparers)


def problem_key(problem: str) -> str:
    """The key a problem (``KEY: REASON``) is about."""
    return problem.split(":", 1)[0].strip()
