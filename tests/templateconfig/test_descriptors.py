"""Parameter descriptors: normalization, applicability, validation, --human-readable."""
from __future__ import annotations

import logging

import pytest

from templateconfig.descriptors import (
    DescriptorError,
    format_human_readable,
    is_applicable,
    normalize,
    password_keys,
    validate_params,
)

NET = "com.oracle.linux.network."
ROOT_PASSWORD = "com.oracle.linux.root-password"

NETWORK = [
    {"key": NET + "hostname", "description": "Host name of the virtual machine.",
     "required": True},
    {"key": NET + "bootproto.0", "description": "Boot protocol of the first interface.",
     "choices": ["dhcp", "static"], "default": "dhcp"},
    {"key": NET + "ipaddr.0", "description": "IP address of the first interface.",
     "required": True, "requires": [NET + "bootproto.0", ["static", "none"]]},
    {"key": NET + "dns-search-domains.0", "description": "DNS search domains.",
     "depends": NET + "device.0", "hidden": "True"},
]
AUTHENTICATION = [
    {"key": ROOT_PASSWORD, "description": "The root password.", "required": "yes",
     "password": True},
]
SELINUX = [
    {"key": "com.oracle.linux.selinux.mode", "hidden": True,
     "choices": ["enforcing", "permissive", "disabled"]},
]
MODULES = [("network", NETWORK), ("selinux", SELINUX), ("authentication", AUTHENTICATION)]


class TestNormalize:
    def test_fills_every_field(self):
        desc = normalize({"key": "k"})
        assert desc == {"key": "k", "description": "", "hidden": False, "required": False,
                        "password": False, "depends": [], "requires": [], "choices": None,
                        "default": None}

    @pytest.mark.parametrize("raw, expected", [
        (True, True), (False, False), ("True", True), ("yes", True), ("1", True), (1, True),
        ("False", False), ("no", False), ("", False), (0, False), (None, False),
    ])
    def test_booleans_are_lenient(self, raw, expected):
        assert normalize({"key": "k", "hidden": raw})["hidden"] is expected

    def test_requires_single_value_and_json_values_become_strings(self):
        desc = normalize({"key": "k", "requires": ["other", "static"], "default": True,
                          "choices": [True, False]})
        assert desc["requires"] == [("other", ["static"])]
        assert desc["default"] == "True"
        assert desc["choices"] == ["True", "False"]

    def test_is_idempotent(self):
        once = normalize(NETWORK[2], "network")
        assert normalize(once, "network") == once

    def test_unknown_fields_are_kept(self):
        assert normalize({"key": "k", "type": "int"})["type"] == "int"

    @pytest.mark.parametrize("desc, field", [
        ({"key": "k", "hidden": "maybe"}, "hidden"),
        ({"key": "k", "choices": {"a": 1}}, "choices"),
        ({"key": "k", "requires": ["other"]}, "requires"),
        ({"key": "k", "depends": 5}, "depends"),
        ({"key": "k", "default": ["a"]}, "default"),
        ({"description": "no key"}, "key"),
        ({"key": "two words"}, "key"),
    ])
    def test_malformed_names_module_and_field(self, desc, field):
        with pytest.raises(DescriptorError) as info:
            normalize(desc, "mymodule")
        assert info.value.field == field
        assert "mymodule" in str(info.value) and repr(field) in str(info.value)

    def test_not_an_object(self):
        with pytest.raises(DescriptorError, match="mymodule"):
            normalize(["k"], "mymodule")


class TestApplicability:
    def test_without_conditions_always_applies(self):
        assert is_applicable(NETWORK[0], {})

    def test_requires_needs_one_of_the_values(self):
        ipaddr = NETWORK[2]
        assert is_applicable(ipaddr, {NET + "bootproto.0": "static"})
        assert is_applicable(ipaddr, {NET + "bootproto.0": "none"})
        assert not is_applicable(ipaddr, {NET + "bootproto.0": "dhcp"})
        assert not is_applicable(ipaddr, {})

    def test_depends_needs_a_non_empty_value(self):
        search = NETWORK[3]
        assert is_applicable(search, {NET + "device.0": "eth0"})
        assert not is_applicable(search, {NET + "device.0": ""})
        assert not is_applicable(search, {})

    def test_several_requires_pairs_all_hold(self):
        desc = {"key": "k", "requires": [["a", ["1"]], ["b", ["2", "3"]]]}
        assert is_applicable(desc, {"a": "1", "b": "3"})
        assert not is_applicable(desc, {"a": "1", "b": "4"})


class TestValidateParams:
    GOOD = {NET + "hostname": "web1", ROOT_PASSWORD: "s3cret-Root!"}

    def test_complete_params_have_no_problem(self):
        assert validate_params(MODULES, self.GOOD) == []

    def test_missing_required_key_names_module_and_key(self):
        problems = validate_params(MODULES, {NET + "hostname": "web1"})
        assert problems == ["authentication: %s: required, but not given" % ROOT_PASSWORD]

    def test_a_key_an_earlier_run_applied_counts_as_given(self):
        assert validate_params(MODULES, {NET + "hostname": "web1"}, given=[ROOT_PASSWORD]) == []
        # an empty value too: the key is absent for this run's purposes
        assert validate_params(MODULES, {NET + "hostname": "web1", ROOT_PASSWORD: ""},
                               given=[ROOT_PASSWORD]) == []

    def test_empty_value_counts_as_missing(self):
        problems = validate_params(MODULES, dict(self.GOOD, **{NET + "hostname": ""}))
        assert len(problems) == 1
        assert problems[0] == "network: %s: required, but not given" % (NET + "hostname")

    def test_value_not_in_choices_names_value_and_choices(self):
        problems = validate_params(MODULES, dict(self.GOOD, **{NET + "bootproto.0": "bootp"}))
        assert problems == ["network: %s: value 'bootp' is not one of: dhcp, static"
                            % (NET + "bootproto.0")]

    def test_values_a_spec_checks_are_left_to_it(self):
        params = dict(self.GOOD, **{NET + "bootproto.0": "DHCP"})  # the spec allows any case
        assert validate_params(MODULES, params, values_checked=["network"]) == []
        del params[NET + "hostname"]  # required is still checked here
        assert validate_params(MODULES, params, values_checked=["network"]) == [
            "network: %s: required, but not given" % (NET + "hostname")]

    def test_hidden_keys_are_validated_too(self):
        params = dict(self.GOOD, **{"com.oracle.linux.selinux.mode": "strict"})
        [problem] = validate_params(MODULES, params)
        assert problem.startswith("selinux: com.oracle.linux.selinux.mode: value 'strict'")

    def test_only_applicable_descriptors_are_checked(self):
        # ipaddr.0 is required, but only when bootproto.0 is static or none
        assert validate_params(MODULES, dict(self.GOOD, **{NET + "bootproto.0": "dhcp"})) == []
        problems = validate_params(MODULES, dict(self.GOOD, **{NET + "bootproto.0": "static"}))
        assert problems == ["network: %s: required, but not given" % (NET + "ipaddr.0")]

    def test_every_problem_is_reported(self):
        problems = validate_params(MODULES, {NET + "bootproto.0": "bootp"})
        assert len(problems) == 3

    def test_a_required_key_with_a_default_is_satisfied(self):
        modules = [("m", [{"key": "k", "required": True, "default": "x"}])]
        assert validate_params(modules, {}) == []

    def test_password_value_never_quoted(self):
        secret = "Hunter2-not-a-choice"
        modules = [("vault", [{"key": "vault.token", "password": True, "choices": ["a", "b"]}])]
        [problem] = validate_params(modules, {"vault.token": secret})
        assert problem == "vault: vault.token: the value given is not one of: a, b"
        assert secret not in problem

    def test_malformed_descriptor_is_a_problem_naming_the_module(self):
        modules = MODULES + [("broken", [{"key": "x", "required": "perhaps"}])]
        problems = validate_params(modules, self.GOOD)
        assert len(problems) == 1
        assert problems == ["broken: x: malformed descriptor (field 'required'): expected "
                            "true or false, got 'perhaps'"]


def test_password_keys():
    modules = MODULES + [("user", [{"key": "com.oracle.linux.user.password.0",
                                    "password": "True"}, {"key": "x", "password": False}])]
    assert password_keys(modules) == {ROOT_PASSWORD, "com.oracle.linux.user.password.0"}


class TestHumanReadable:
    ENUMERATION = [
        (50, "network", NETWORK),
        (90, "authentication", AUTHENTICATION),
        (20, "selinux", SELINUX),
        (60, "empty", []),
    ]

    def test_headings_keys_flags_and_choices(self):
        text = format_human_readable(self.ENUMERATION)
        assert "network (priority 50)" in text
        assert "authentication (priority 90)" in text
        for _, _, descs in self.ENUMERATION:
            for desc in descs:
                assert desc["key"] in text
        lines = text.splitlines()
        row = next(line for line in lines if ROOT_PASSWORD in line)
        assert row.split()[1:] == ["required,", "password"]
        hidden = next(line for line in lines if NET + "dns-search-domains.0" in line)
        assert hidden.split()[-1] == "hidden"
        assert "choices: dhcp, static; default: dhcp" in text
        assert "choices: enforcing, permissive, disabled" in text
        assert "only if %s is one of static, none" % (NET + "bootproto.0") in text
        assert "only if %s is set" % (NET + "device.0") in text
        assert "(no parameters)" in text

    def test_flags_column_is_aligned(self):
        text = format_human_readable(self.ENUMERATION)
        rows = [line for line in text.splitlines() if line.startswith("  ")
                and not line.startswith("   ") and "(no parameters)" not in line]
        assert len(rows) == 3 + 6  # a KEY/FLAGS header per non-empty module, one row per key
        columns = {line.rstrip().rfind("  ") + 2 for line in rows}
        assert len(columns) == 1

    def test_fits_a_terminal(self):
        long_description = "A very long description " * 30
        enumeration = self.ENUMERATION + [(99, "verbose", [
            {"key": "com.example.a-really-long-third-party-key-name.with.many.parts.0",
             "description": long_description, "choices": ["x" * 10] * 12}])]
        text = format_human_readable(enumeration)
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "com.example.a-really-long-third-party-key-name.with.many.parts.0" in text

    def test_description_is_wrapped_not_lost(self):
        text = format_human_readable([(1, "m", [{"key": "k", "description": "word " * 50}])])
        assert " ".join(text.split()).count("word") == 50

    def test_password_default_not_shown(self):
        text = format_human_readable([(1, "m", [{"key": "k", "password": True,
                                                 "default": "changeme-now"}])])
        assert "changeme-now" not in text

    def test_malformed_descriptor_listed_not_fatal(self):
        text = format_human_readable([(1, "m", [{"key": "k", "hidden": "maybe"}, {"key": "ok"}])])
        assert "MALFORMED" in text and "'hidden'" in text and "ok" in text


def test_validation_logs_no_secret(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "Zebra-Password-77"
    validate_params(MODULES, {ROOT_PASSWORD: secret, NET + "bootproto.0": "x"})
    assert secret not in caplog.text
