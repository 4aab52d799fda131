"""Validators shared by the standard modules: each raises ``ValueError(reason)``.

Reasons never repeat the value (the caller names key and value, hiding secrets).
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable

BOOLEAN_TRUE = ("true", "yes", "on", "1")
BOOLEAN_FALSE = ("false", "no", "off", "0")

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def boolean(value: str) -> None:
    if value.strip().lower() not in BOOLEAN_TRUE + BOOLEAN_FALSE:
        raise ValueError("expected True or False (also yes/no)")


def is_true(value: str) -> bool:
    """The truth of a validated boolean value ("True", "yes", ...)."""
    return value.strip().lower() in BOOLEAN_TRUE


def integer(minimum: int, maximum: int) -> Callable[[str], None]:
    def check(value: str) -> None:
        if not re.match(r"^[0-9]+\Z", value.strip()):
            raise ValueError("expected a whole number")
        if not minimum <= int(value) <= maximum:
            raise ValueError("expected a number from %d to %d" % (minimum, maximum))
    return check


def hostname(value: str) -> None:
    """RFC 1123 host name (a fully qualified name is allowed), at most 253 characters."""
    name = value[:-1] if value.endswith(".") else value
    if not name:
        raise ValueError("empty host name")
    if len(name) > 253:
        raise ValueError("longer than 253 characters")
    for label in name.split("."):
        if not _HOST_LABEL.match(label):
            raise ValueError("each label needs 1-63 letters, digits or hyphens, "
                             "not starting or ending with a hyphen")


def ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise ValueError("not an IPv4 address") from None


def ip_address(value: str) -> None:
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError("not an IP address") from None


def netmask(value: str) -> None:
    """A dotted netmask (255.255.255.0) or a prefix length (24, /24)."""
    text = value.strip().lstrip("/")
    if text.isdigit():
        if not 0 <= int(text) <= 32:
            raise ValueError("prefix length must be 0-32")
        return
    try:
        ipaddress.IPv4Network("0.0.0.0/%s" % text)
    except ValueError:
        raise ValueError("not a netmask (dotted like 255.255.255.0, or a prefix like 24)") from None


def prefix_length(value: str) -> int:
    """The prefix length of a validated netmask."""
    text = value.strip().lstrip("/")
    if text.isdigit():
        return int(text)
    return ipaddress.IPv4Network("0.0.0.0/%s" % text).prefixlen


def comma_list(item: Callable[[str], None]) -> Callable[[str], None]:
    """A comma-separated list whose every item passes ``item``."""
    def check(value: str) -> None:
        items = split_list(value)
        if not items:
            raise ValueError("empty list")
        for position, entry in enumerate(items, 1):
            try:
                item(entry)
            except ValueError as exc:
                raise ValueError("item %d: %s" % (position, exc)) from None
    return check


def split_list(value: str) -> list:
    """Items of a comma- (or space-) separated list."""
    return [part for part in re.split(r"[,\s]+", value.strip()) if part]


def mac_address(value: str) -> None:
    if not re.match(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}\Z", value.strip()):
        raise ValueError("not a MAC address like 00:16:3e:00:00:01")
