"""templateconfig.modules.support.state: what a module applied and what it changed."""
from __future__ import annotations


def test_fingerprint_leaves_secrets_out():
    """An unsalted digest of a password on disk would be crackable: secrets are not hashed."""
    from templateconfig.modules.support.state import fingerprint

    base = {"com.oracle.linux.network.hostname": "h"}
    assert fingerprint(dict(base, **{"com.oracle.linux.root-password": "a"})) == fingerprint(base)
    assert fingerprint(dict(base, **{"com.oracle.linux.network.mtu.0": "1500"})) != fingerprint(base)
