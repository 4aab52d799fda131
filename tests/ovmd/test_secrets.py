"""Which keys are secrets (a security policy, one row per key), and redaction.

A secret's value is kept only in memory and in /run, never in a log, a report or the
durable cache (docs/formats.md). ``is_secret_key`` is the one place that decides it;
these tables are its policy, key by key.
"""
from __future__ import annotations

import logging

import pytest

from ovmd.secrets import REDACTED, RedactingFilter, is_secret_key, redact
from templateconfig.descriptors import password_keys

ORACLE = "com.oracle.linux."

@pytest.mark.parametrize("key, secret", [
    # Oracle's password keys
    (ORACLE + "root-password", True),
    (ORACLE + "user.password.0", True),
    (ORACLE + "user.password.12", True),
    # ssh private keys: the host keys of every type (rsa1's is plain "host-key"), users'
    (ORACLE + "ssh.host-key", True),
    (ORACLE + "ssh.host-rsa-key", True),
    (ORACLE + "ssh.host-dsa-key", True),
    (ORACLE + "ssh.host-ecdsa-key", True),
    (ORACLE + "ssh.host-ed25519-key", True),
    (ORACLE + "ssh.private-key.0", True),
    # their public halves and the other ssh keys are not secrets
    (ORACLE + "ssh.host-key-pub", False),
    (ORACLE + "ssh.host-rsa-key-pub", False),
    (ORACLE + "ssh.host-ed25519-key-pub", False),
    (ORACLE + "ssh.authorized-keys.0", False),
    (ORACLE + "ssh.known-hosts.0", False),
    (ORACLE + "ssh.user.0", False),
    # the type of a private key (rsa, dsa...) is not a secret, nor any "-type" key
    (ORACLE + "ssh.private-key-type.0", False),
    (ORACLE + "ssh.private-key-type.12", False),
    ("com.mycompany.private_key_type", False),
    ("com.mycompany.password-type", False),
    # host-key names are matched whole: other shapes are not host private keys
    (ORACLE + "ssh.host-rsa-key.0", False),
    (ORACLE + "ssh.host-foo-key", False),
    ("x." + ORACLE + "ssh.host-rsa-key", False),
    (ORACLE + "ssh.host-rsa-key-pub.0", False),
    # ordinary keys
    (ORACLE + "user.name.0", False),
    (ORACLE + "group.name.0", False),
    (ORACLE + "network.hostname", False),
    (ORACLE + "ovmd.initial-config-status", False),
    ("VMAPIEvent", False),
    # third-party keys named like a secret, whatever their prefix
    ("com.mycompany.db-password", True),
    ("com.mycompany.db_passwd", True),
    ("com.mycompany.passphrase", True),
    ("com.mycompany.api-secret", True),
    ("com.mycompany.private_key", True),
    ("com.mycompany.tls.private-key", True),
    # near misses: not named like a secret
    ("com.mycompany.pass", False),
    ("com.mycompany.pwd", False),
    ("com.mycompany.token", False),
    ("com.mycompany.public-key", False),
    # a "-pub" suffix always names a public value
    ("com.mycompany.password-pub", False),
    # whatever the case
    ("com.mycompany.DB_PASSWORD", True),
    ("com.mycompany.Password", True),
    ("com.mycompany.Private-Key", True),
    ("com.mycompany.SECRET", True),
    (ORACLE + "SSH.HOST-RSA-KEY", True),
    ("com.mycompany.password-PUB", False),
])
def test_which_keys_are_secrets(key, secret):
    assert is_secret_key(key) is secret


DESCRIPTORS = [("mymodule", [
    {"key": "com.mycompany.pin", "password": True},
    {"key": "com.mycompany.token-pub", "password": "yes"},
    {"key": "com.mycompany.note", "password": False},
])]


@pytest.mark.parametrize("key, secret", [
    ("com.mycompany.pin", True),        # flagged: a secret although not named like one
    ("com.mycompany.token-pub", True),  # the flag wins over the "-pub" suffix
    ("com.mycompany.note", False),      # flagged false: the name decides
    (ORACLE + "root-password", True),   # the name still counts alongside the flags
])
def test_descriptor_flagged_password_keys_are_secrets(key, secret):
    assert is_secret_key(key, password_keys(DESCRIPTORS)) is secret


KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"


@pytest.mark.parametrize("text, secrets, expected", [
    ("password is hunter22", ["hunter22"], "password is " + REDACTED),
    ("hunter22 and hunter22", ["hunter22"], REDACTED + " and " + REDACTED),
    ("nothing to hide", ["hunter22"], "nothing to hide"),
    ("an empty secret changes nothing", [""], "an empty secret changes nothing"),
    # a whole value is masked wherever it stands alone: after "=", in quotes, at the end
    ("pw=hunter22, then 'hunter22'", ["hunter22"], "pw=%s, then '%s'" % (REDACTED, REDACTED)),
    ("it was hunter22.", ["hunter22"], "it was %s." % REDACTED),
    # the longest secret first: a secret containing another is redacted whole
    ("xhunter22-longer", ["hunter22", "xhunter22-longer"], REDACTED),
    # never inside a longer word, key name or path: masking there would point at it
    ("com.hunter22.linux", ["hunter22"], "com.hunter22.linux"),
    ("com.oracle.linux.root-password", ["password"], "com.oracle.linux.root-password"),
    ("/home/hunter22/x hunter22x xhunter22", ["hunter22"],
     "/home/hunter22/x hunter22x xhunter22"),
    # short values are never masked: a dictionary word is as often just a word
    ("stored com.oracle.linux.root-password (root)", ["oracle", "linux", "root"],
     "stored com.oracle.linux.root-password (root)"),
    ("running first-boot configuration", ["first"], "running first-boot configuration"),
    ("abc", ["abc"], "abc"),
    # a line of a multi-line secret is redacted on its own...
    ("error near b3BlbnNzaC1rZXktdjEAAAAA here", [KEY_TEXT],
     "error near %s here" % REDACTED),
    # ...but lines under 8 characters are not secrets by themselves
    ("-----\nshort\n", ["-----\nshort\nb3BlbnNzaC1rZXktdjEAAAAA"], "-----\nshort\n"),
    (KEY_TEXT, [KEY_TEXT], REDACTED),
])
def test_redact(text, secrets, expected):
    assert redact(text, secrets) == expected


def record(msg, *args, exc_info=None):
    return logging.LogRecord("ovmd.test", logging.ERROR, __file__, 1, msg, args, exc_info)


def raised(message):
    try:
        raise ValueError(message)
    except ValueError:
        import sys
        return sys.exc_info()


@pytest.mark.parametrize("added, discarded, make, message, exc_text_has", [
    (["s3cret-pw"], [], lambda: record("got %s", "s3cret-pw"), "got " + REDACTED, None),
    (["s3cret-pw"], [], lambda: record("got s3cret-pw"), "got " + REDACTED, None),
    ([], [], lambda: record("got %s", "s3cret-pw"), "got s3cret-pw", None),
    (["", "s3cret-pw"], [], lambda: record("got %s", "s3cret-pw"), "got " + REDACTED, None),
    (["s3cret-pw"], ["s3cret-pw"], lambda: record("got %s", "s3cret-pw"), "got s3cret-pw",
     None),
    (["s3cret-pw"], [], lambda: record("failed", exc_info=raised("bad s3cret-pw")), "failed",
     "ValueError: bad " + REDACTED),
])
def test_redacting_filter(added, discarded, make, message, exc_text_has):
    redactor = RedactingFilter()
    redactor.add(*added)
    redactor.discard(*discarded)
    entry = make()
    assert redactor.filter(entry) is True  # it never drops a record, it cleans it
    assert entry.getMessage() == message
    if exc_text_has:
        assert exc_text_has in entry.exc_text and "s3cret-pw" not in entry.exc_text


def test_a_formatted_record_never_shows_the_secret():
    redactor = RedactingFilter()
    redactor.add("s3cret-pw")
    entry = record("value %r", "s3cret-pw", exc_info=raised("s3cret-pw"))
    redactor.filter(entry)
    text = logging.Formatter("%(message)s").format(entry)
    assert "s3cret-pw" not in text and REDACTED in text
