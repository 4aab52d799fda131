"""Which parameters are secrets, and the last-resort redaction of secret values.

Secrets (passwords, private keys) must never reach a log, a report, a process argument,
an exception message or a file other than their destination. Code never passes a secret
value to a logger or puts one into a message: key names, counts and reasons are logged,
values never. :class:`RedactingFilter` (installed by the logging set-up) and :func:`redact`
(the report writer) are only a safety net for text that came from elsewhere, such as a
module's error output; they mask a secret only where it stands as a whole value and only
when it is long enough not to be an ordinary word, so that a short password (``oracle``,
``root``) never turns ``com.oracle.linux`` into a clue.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, Iterable, Pattern, Set

#: Keys that carry secrets in the standard modules (docs/keys.md), plus any key whose
#: name says it is a password or a private key (third-party modules use their prefixes).
#: Case does not matter: ``DB_PASSWORD`` is a password too.
_SECRET_KEY = re.compile(
    r"""(
        password | passwd | passphrase | secret | private[-_]key
      | ^com\.oracle\.linux\.ssh\.host(-(rsa|dsa|ecdsa|ed25519))?-key$
    )""",
    re.VERBOSE | re.IGNORECASE,
)
#: Names that describe a secret without holding one: its public half (``-pub``) or its
#: kind (``ssh.private-key-type.N`` holds ``rsa``), with an optional index ``.N``.
_NOT_SECRET = re.compile(r"([-_]pub|[-_]type)(\.[0-9]+)?$", re.IGNORECASE)

REDACTED = "********"
#: Shorter values (or lines of multi-line values) are never masked: they are ordinary
#: words as often as secrets, and masking them would point at the secret.
MIN_REDACTED = 8
#: Characters that continue a word, a key name or a path: a secret is masked only where
#: none of them touches it (a final "." before a space or the end still ends a value).
_WORD = r"0-9A-Za-z_\-./@+"


def is_secret_key(key: str, extra: Iterable[str] = ()) -> bool:
    """True if ``key``'s value must be treated as a secret.

    ``extra`` names further keys known to be secret, typically those a module's
    enumerate output flags with ``"password": true``.
    """
    if key in extra:
        return True
    if _NOT_SECRET.search(key):
        return False
    return _SECRET_KEY.search(key) is not None


def _pieces(secret: str) -> Set[str]:
    """The parts of a secret worth masking: the whole value and, for a multi-line value
    (a private key), each of its lines, if at least :data:`MIN_REDACTED` long."""
    pieces = set()
    for piece in [secret] + secret.splitlines():
        piece = piece.strip()
        if len(piece) >= MIN_REDACTED:
            pieces.add(piece)
    return pieces


def _pattern(pieces: Iterable[str]) -> "Pattern[str] | None":
    ordered = sorted(pieces, key=len, reverse=True)  # a secret containing another: whole
    if not ordered:
        return None
    return re.compile(r"(?<![%s])(?:%s)(?![%s]|\.[%s])" % (
        _WORD, "|".join(re.escape(p) for p in ordered), _WORD.replace(".", ""), _WORD))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every whole occurrence of every secret value replaced.

    A value is masked where it stands alone (not inside a longer word, key name or path)
    and only if it is at least :data:`MIN_REDACTED` characters long; multi-line secrets
    (private keys) are also masked line by line, so that a line of a key quoted in an
    error message does not leak either.
    """
    pieces: Set[str] = set()
    for secret in secrets:
        if secret:
            pieces |= _pieces(secret)
    pattern = _pattern(pieces)
    return pattern.sub(REDACTED, text) if pattern is not None else text


class RedactingFilter(logging.Filter):
    """A logging filter that masks known secret values in every record: a last resort.

    The daemon and the runner register secret values as they learn them (:meth:`add`)
    and forget them once wiped (:meth:`discard`); install the filter on every handler
    (not logger) so records from any logger pass through it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: Dict[str, int] = {}  # value -> how many holders registered it
        self._compiled: "Pattern[str] | None" = None
        self._stale = False

    def add(self, *values: str) -> None:
        for value in values:
            if value:
                self._secrets[value] = self._secrets.get(value, 0) + 1
                self._stale = True

    def discard(self, *values: str) -> None:
        """Forget values that were wiped (each :meth:`add` is undone by one discard)."""
        for value in values:
            count = self._secrets.get(value, 0)
            if count > 1:
                self._secrets[value] = count - 1
            elif count:
                del self._secrets[value]
                self._stale = True

    @property
    def secrets(self) -> Set[str]:
        return set(self._secrets)

    def _regex(self) -> "Pattern[str] | None":
        if self._stale:
            pieces: Set[str] = set()
            for secret in self._secrets:
                pieces |= _pieces(secret)
            self._compiled = _pattern(pieces)
            self._stale = False
        return self._compiled

    def filter(self, record: logging.LogRecord) -> bool:
        pattern = self._regex()
        if pattern is not None:
            message = record.getMessage()
            cleaned = pattern.sub(REDACTED, message)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = pattern.sub(REDACTED, record.exc_text)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True
