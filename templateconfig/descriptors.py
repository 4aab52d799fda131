"""Parameter descriptors: what a module's ``do_enumerate`` declares about its keys.

A module's enumerate output is a JSON list of descriptors (docs/module-contract.md)::

    {"key": "com.oracle.linux.network.bootproto.0",
     "description": "Boot protocol of the first interface.",
     "hidden": false, "required": false, "password": false,
     "depends": "com.oracle.linux.network.device.0",
     "requires": ["com.oracle.linux.network.onboot.0", ["yes"]],
     "choices": ["dhcp", "static"], "default": "dhcp"}

Everything the runner does with these -- validating the params before touching the
system, prompting on the console, ``--enumerate --human-readable`` -- goes through this
module, so that a descriptor is interpreted the same way everywhere.

Third-party modules are written by hand, so :func:`normalize` is lenient where the
meaning is unambiguous (``"True"``/``"yes"`` for booleans, a single value or a
``"a|b"`` string for choices, ``[key, value]`` for ``requires``) and strict otherwise.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ovmd.secrets import is_secret_key
from templateconfig.errors import TemplateConfigError

log = logging.getLogger(__name__)

#: A module's enumerate output as the runner hands it over: (module name, descriptors).
ModuleParams = Tuple[str, List[dict]]

BOOLEAN_FIELDS = ("hidden", "required", "password")

_TRUE = frozenset(("true", "yes", "y", "on", "1"))
_FALSE = frozenset(("false", "no", "n", "off", "0", ""))


class DescriptorError(TemplateConfigError, ValueError):
    """A malformed descriptor in a module's enumerate output.

    ``module``, ``key`` and ``field`` say where; the message names all that are known.
    """

    def __init__(self, problem: str, module: Optional[str] = None, key: Optional[str] = None,
                 field: Optional[str] = None) -> None:
        self.module, self.key, self.field, self.problem = module, key, field, problem
        where = []
        if module:
            where.append("module %s" % module)
        if key:
            where.append("key %s" % key)
        if field:
            where.append("field %r" % field)
        prefix = "malformed parameter descriptor (%s)" % ", ".join(where) if where \
            else "malformed parameter descriptor"
        super().__init__("%s: %s" % (prefix, problem))


def _as_bool(value: Any, field: str, module: Optional[str], key: Optional[str]) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if value in (0, 1):
            return bool(value)
    elif isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise DescriptorError("expected true or false, got %r" % (value,), module, key, field)


def as_text(value: Any) -> str:
    """A scalar as the string a module receives (JSON true -> "True", as Oracle's values;
    1500 -> "1500")."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _choices(value: Any, module: Optional[str], key: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in re.split(r"[|,]", value)]
        return [p for p in parts if p] or None
    if isinstance(value, (list, tuple)):
        if not all(_is_scalar(v) for v in value):
            raise DescriptorError("choices must be a list of strings", module, key, "choices")
        return [as_text(v) for v in value] or None
    raise DescriptorError("choices must be a list of strings, got %s" % type(value).__name__,
                          module, key, "choices")


def _depends(value: Any, module: Optional[str], key: Optional[str]) -> List[str]:
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise DescriptorError("depends must be a key name (or a list of key names)",
                          module, key, "depends")


def _requires(value: Any, module: Optional[str], key: Optional[str]) -> List[Tuple[str, List[str]]]:
    """``[key, [values]]``, ``[key, value]`` or a list of such pairs -> [(key, [values])]."""
    if value is None or value == [] or value == "":
        return []
    problem = "requires must be [key, [allowed values]]"
    if not isinstance(value, (list, tuple)) or not value:
        raise DescriptorError(problem, module, key, "requires")
    pairs = value if isinstance(value[0], (list, tuple)) else [value]
    result = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str) \
                or not pair[0]:
            raise DescriptorError(problem, module, key, "requires")
        allowed = pair[1]
        if _is_scalar(allowed):
            allowed = [allowed]
        if not isinstance(allowed, (list, tuple)) or not all(_is_scalar(v) for v in allowed):
            raise DescriptorError(problem, module, key, "requires")
        result.append((pair[0], [as_text(v) for v in allowed]))
    return result


def normalize(desc: Mapping[str, Any], module: Optional[str] = None) -> dict:
    """A descriptor with every field present and of one type.

    Returns a new dict: ``key`` (str), ``description`` (str), ``hidden``, ``required``,
    ``password`` (bool), ``depends`` (list of keys, empty if none), ``requires`` (list of
    ``(key, [allowed values])``, empty if none), ``choices`` (list of str or None),
    ``default`` (str or None). Unknown fields are kept unchanged. Idempotent.

    Raises :class:`DescriptorError` naming ``module`` (when given), the key and the field.
    """
    if not isinstance(desc, Mapping):
        raise DescriptorError("expected a JSON object, got %s" % type(desc).__name__, module)
    key = desc.get("key")
    if not isinstance(key, str) or not key.strip():
        raise DescriptorError("'key' must be a non-empty string", module, None, "key")
    if key != key.strip() or any(c.isspace() for c in key):
        raise DescriptorError("'key' must not contain white space", module, key, "key")
    result = dict(desc)
    description = desc.get("description")
    result["description"] = "" if description is None else str(description)
    for field in BOOLEAN_FIELDS:
        result[field] = _as_bool(desc.get(field), field, module, key)
    result["depends"] = _depends(desc.get("depends"), module, key)
    result["requires"] = _requires(desc.get("requires"), module, key)
    result["choices"] = _choices(desc.get("choices"), module, key)
    default = desc.get("default")
    if default is not None and not _is_scalar(default):
        raise DescriptorError("default must be a string", module, key, "default")
    result["default"] = None if default is None else as_text(default)
    return result


def is_set(params: Mapping[str, Any], key: str) -> bool:
    """A key counts as set when it is present with a non-empty value."""
    value = params.get(key)
    return value is not None and value != ""


def is_applicable(desc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """True if ``desc``'s ``depends`` and ``requires`` conditions hold in ``params``.

    ``depends``: every named key is set (present, non-empty). ``requires``: every named
    key has one of the allowed values. Only ``params`` is consulted, not the defaults of
    the keys named, so a condition on a key nobody set is not met.
    """
    return _applicable(normalize(desc), params)


def _applicable(desc: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """:func:`is_applicable` for a descriptor already normalized."""
    if not all(is_set(params, key) for key in desc["depends"]):
        return False
    for key, allowed in desc["requires"]:
        value = params.get(key)
        if value is None or as_text(value) not in allowed:
            return False
    return True


def is_password(desc: Mapping[str, Any], extra: Iterable[str] = ()) -> bool:
    """True if the descriptor's value is a secret: flagged ``password``, or a secret key name."""
    try:
        flagged = _as_bool(desc.get("password"), "password", None, None)
    except DescriptorError:
        flagged = True  # unreadable flag: err on the side of secrecy
    key = desc.get("key")
    return flagged or (isinstance(key, str) and is_secret_key(key, extra))


def password_keys(modules: Sequence[ModuleParams]) -> Set[str]:
    """Every key flagged ``password`` by any module (lenient: malformed entries count too)."""
    keys = set()
    for _name, descs in modules:
        for desc in descs or ():
            if not isinstance(desc, Mapping) or not isinstance(desc.get("key"), str):
                continue
            try:
                flagged = _as_bool(desc.get("password"), "password", None, None)
            except DescriptorError:
                flagged = True
            if flagged:
                keys.add(desc["key"])
    return keys


def _shown(value: str, limit: int = 40) -> str:
    value = str(value)
    if len(value) > limit:
        value = value[:limit - 3] + "..."
    return repr(value)


def check_value(desc: Mapping[str, Any], value: Optional[str],
                secret: bool = False, check_choices: bool = True) -> Optional[str]:
    """What is wrong with ``value`` for the (normalized) ``desc``, or None if it is fine.

    ``value`` None or "" means "not given". Shared by validation and the console prompts.
    A secret value is never quoted in the answer. ``choices`` false: only ``required``
    is checked (the module's own declaration checks the value).
    """
    if value is None or value == "":
        if desc["required"] and not desc["default"]:
            return "required, but not given"
        return None
    choices = desc["choices"]
    if check_choices and choices and as_text(value) not in choices:
        shown = "the value given" if secret else "value %s" % _shown(as_text(value))
        return "%s is not one of: %s" % (shown, ", ".join(choices))
    return None


def validate_params(modules: Sequence[ModuleParams], params: Mapping[str, Any],
                    given: Iterable[str] = (), values_checked: Iterable[str] = ()) -> List[str]:
    """Every problem with ``params`` against the modules' descriptors; empty if none.

    Each problem reads ``MODULE: KEY: REASON``: a required key missing (one with a
    default is satisfied by it, and so is one in ``given``: keys an earlier successful
    run applied), or a value not among its ``choices``. Only descriptors applicable to
    ``params`` (see :func:`is_applicable`) are checked; hidden keys are checked too.
    ``values_checked``: modules whose own declaration checks their values (the standard
    modules' specs), so that only ``required`` is checked here. A malformed descriptor
    is a problem as well. Values of password keys are never quoted.
    """
    problems = []
    secret_keys = password_keys(modules)
    given = set(given)
    by_spec = set(values_checked)
    for name, descs in modules:
        for index, desc in enumerate(descs or ()):
            try:
                desc = normalize(desc, name)
            except DescriptorError as exc:
                problems.append("%s: %s: malformed descriptor%s: %s" % (
                    name, exc.key or "descriptor %d" % (index + 1),
                    " (field %r)" % exc.field if exc.field else "", exc.problem))
                continue
            if not _applicable(desc, params):
                continue
            key = desc["key"]
            value = params.get(key)
            if (value is None or value == "") and key in given:
                continue
            secret = desc["password"] or is_secret_key(key, secret_keys)
            problem = check_value(desc, None if value is None else as_text(value), secret,
                                  check_choices=name not in by_spec)
            if problem:
                problems.append("%s: %s: %s" % (name, key, problem))
    return problems


# --- --human-readable ------------------------------------------------------------------

def _condition_lines(desc: Mapping[str, Any]) -> List[str]:
    lines = []
    for key in desc["depends"]:
        lines.append("only if %s is set" % key)
    for key, allowed in desc["requires"]:
        if len(allowed) == 1:
            lines.append("only if %s is %s" % (key, allowed[0]))
        else:
            lines.append("only if %s is one of %s" % (key, ", ".join(allowed)))
    return lines


def _value_line(desc: Mapping[str, Any]) -> Optional[str]:
    parts = []
    if desc["choices"]:
        parts.append("choices: %s" % ", ".join(desc["choices"]))
    if desc["default"] is not None:
        parts.append("default: %s" % ("(set, not shown)" if desc["password"] else
                                      (desc["default"] or '""')))
    return "; ".join(parts) or None


def _flags(desc: Mapping[str, Any]) -> str:
    return ", ".join(f for f in BOOLEAN_FIELDS if desc[f]) or "-"


def _rows(name: str, descs: Optional[List[dict]]
          ) -> List[Tuple[Dict[str, Any], Optional[str]]]:
    """A module's descriptors for the table: (normalized descriptor, None), or a
    malformed one as ({"key": label}, its problem)."""
    rows: List[Tuple[Dict[str, Any], Optional[str]]] = []
    for index, raw in enumerate(descs or ()):
        try:
            rows.append((normalize(raw, name), None))
        except DescriptorError as exc:
            key = raw.get("key") if isinstance(raw, Mapping) else None
            label = key if isinstance(key, str) and key else "<descriptor %d>" % (index + 1)
            reason = exc.problem if not exc.field else "%r: %s" % (exc.field, exc.problem)
            rows.append(({"key": label}, reason))
    return rows


def _detail_lines(desc: Dict[str, Any]) -> List[str]:
    """Under a key: its conditions, choices and default, then its description's lines."""
    details = _condition_lines(desc)
    value_line = _value_line(desc)
    if value_line:
        details.append(value_line)
    details.extend(line for line in desc["description"].splitlines() if line.strip())
    return details


def format_human_readable(enumeration: Sequence[Tuple[Any, str, List[dict]]],
                          width: int = 80,
                          failures: Optional[Mapping[str, str]] = None) -> str:
    """``--enumerate --human-readable``: one section per module, one row per key.

    Per module a heading ``name (priority N)``, then a table with the columns KEY and
    FLAGS (required, hidden, password) aligned across the whole output; under each key,
    indented, the conditions (``only if KEY is set``, ``only if KEY is one of ...``), the
    choices and default, and the description, wrapped to ``width``. Keys longer than the
    key column push their flags onto the next line instead of breaking the alignment.
    Password defaults are not shown. A malformed descriptor is listed with its problem.
    ``failures`` maps a module whose enumeration failed to why, shown on one line in
    place of its table. A priority may be a number or, as Oracle's output had it, a
    string.
    """
    import textwrap  # only for --human-readable: not on every run's start-up

    indent, detail = "  ", "      "
    rows_by_module = [(priority, name, _rows(name, descs))
                      for priority, name, descs in enumeration]
    keys = [row["key"] for _, _, rows in rows_by_module for row, _ in rows]
    key_width = min(max([len(k) for k in keys] + [len("KEY")]), max(20, width - 28))
    out: List[str] = []
    for priority, name, rows in rows_by_module:
        heading = "%s (priority %s)" % (name, priority)
        if out:
            out.append("")
        out += [heading, "=" * len(heading)]
        failure = (failures or {}).get(name)
        if failure:
            out.append(indent + " ".join(failure.split()))
            continue
        if not rows:
            out.append(indent + "(no parameters)")
            continue
        out.append("%s%-*s  %s" % (indent, key_width, "KEY", "FLAGS"))
        for desc, problem in rows:
            key = desc["key"]
            flags = "MALFORMED" if problem else _flags(desc)
            if len(key) <= key_width:
                out.append("%s%-*s  %s" % (indent, key_width, key, flags))
            else:
                out.append(indent + key)
                out.append("%s%-*s  %s" % (indent, key_width, "", flags))
            for text in [problem] if problem else _detail_lines(desc):
                out.extend(textwrap.wrap(text, width=width, initial_indent=detail,
                                         subsequent_indent=detail,
                                         break_long_words=True, break_on_hyphens=False))
    return "\n".join(out) + "\n"


__all__ = [
    "DescriptorError", "ModuleParams", "as_text", "normalize", "is_set", "is_applicable",
    "is_password", "password_keys", "check_value", "validate_params", "format_human_readable",
]
