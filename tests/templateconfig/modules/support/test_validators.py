"""templateconfig.modules.support.validators: each accepts the good values, refuses the bad."""
from __future__ import annotations

import pytest

from templateconfig.modules.support import validators as v


@pytest.mark.parametrize("validator,good,bad", [
    (v.hostname, ["a", "web-1.example.com", "x" * 63], ["", "-a", "a_b", "x" * 64, ("a." * 127) + "bc"]),
    (v.boolean, ["True", "false", "yes", "NO"], ["maybe", ""]),
    (v.ipv4, ["10.0.0.1"], ["10.0.0", "::1", "a.b.c.d"]),
    (v.netmask, ["255.255.255.0", "24", "/16"], ["33", "255.0.255.0", "x"]),
    (v.comma_list(v.ipv4), ["1.1.1.1,8.8.8.8", "1.1.1.1 8.8.4.4"], ["", "1.1.1.1,nope"]),
    (v.mac_address, ["00:16:3e:00:00:01", "00-16-3E-00-00-01"], ["00:16:3e", "zz:16:3e:00:00:01"]),
    (v.integer(68, 9000), ["1500"], ["67", "9001", "1.5", "-1"]),
])
def test_validators(validator, good, bad):
    for value in good:
        validator(value)
    for value in bad:
        with pytest.raises(ValueError):
            validator(value)


def test_prefix_length():
    assert v.prefix_length("255.255.255.0") == 24
    assert v.prefix_length("/20") == 20
