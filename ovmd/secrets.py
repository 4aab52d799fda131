"""Which parameters are secrets, and redaction of secret values from text.

Secrets (passwords, private keys) must never reach a log, a report, a process argument,
an exception message or a file other than their destination. Redaction happens in one
place: :class:`RedactingFilter` is installed by the logging set-up and the
report writer calls :func:`redact`; call sites do not redact by hand.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, Set

#: Keys that carry secrets in the standard modules (docs/keys.md), plus any key whose
#: name says it is a password or a private key (third-party modules use their prefixes).
_SECRET_KEY = re.compile(
    r"""(
        password | passwd | passphrase | secret | private-key | private_key
      | ^com\.oracle\.linux\.ssh\.host(-(rsa|dsa|ecdsa|ed25519))?-key$
    )""",
    re.VERBOSE,
)

REDACTED = "********"


def is_secret_key(key: str, extra: Iterable[str] = ()) -> bool:
    """True if ``key``'s value must be treated as a secret.

    ``extra`` names further keys known to be secret, typically those a module's
    enumerate output flags with ``"password": true``.
    """
    if key in extra:
        return True
    if key.endswith("-pub"):
        return False
    return _SECRET_KEY.search(key) is not None


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret value replaced.

    Multi-line secrets (private keys) are also redacted line by line, so that a
    fragment of a key quoted in an error message does not leak either.
    """
    values = set()
    for secret in secrets:
        if not secret:
            continue
        values.add(secret)
        for line in secret.splitlines():
            if len(line.strip()) >= 8:  # short lines ('-----', '') are not secret on their own
                values.add(line.strip())
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that removes known secret values from every record.

    The daemon and the runner register secret values as they learn them
    (:meth:`add`); install the filter on every handler (not logger) so records from any
    logger pass through it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: Set[str] = set()

    def add(self, *values: str) -> None:
        self._secrets.update(v for v in values if v)

    def discard(self, *values: str) -> None:
        self._secrets.difference_update(values)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            cleaned = redact(message, self._secrets)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text, self._secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True
