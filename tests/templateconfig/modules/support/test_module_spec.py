"""templateconfig.modules.support.spec: a module declared once gives enumerate, validation
and the contract."""
from __future__ import annotations

import json
import os

import pytest

from templateconfig.modules.support import validators as v
from templateconfig.modules.support.spec import Key, ModuleSpec, ValidationError


def make_spec():
    spec = ModuleSpec(
        "example", {"configure": 50, "cleanup": 40}, "An example module.",
        keys=[
            Key("com.example.name", "A name", required=True, validate=v.hostname),
            Key("com.example.secret", "A secret", password=True, validate=v.integer(1, 9)),
            Key("com.example.mode", "Mode", hidden=True, choices=["a", "b"], default="a"),
            Key("com.example.dev.{n}", "Device N"),
            Key("com.example.ip.{n}", "Address N", requires=("com.example.proto.{n}", ["static"]),
                validate=v.ipv4),
        ],
        enumerate_count=2,
    )
    calls = []

    @spec.target("configure")
    def configure(params):
        calls.append(dict(params))
        return {"com.example.added": "yes"}

    return spec, calls


def test_enumerate_lists_each_key_with_only_its_flags_and_hides_later_indices():
    spec, _ = make_spec()
    assert spec.enumerate("configure") == [
        {"key": "com.example.name", "description": "A name", "required": True},
        {"key": "com.example.secret", "description": "A secret", "password": True},
        {"key": "com.example.mode", "description": "Mode", "hidden": True, "choices": ["a", "b"],
         "default": "a"},
        {"key": "com.example.dev.0", "description": "Device N"},
        {"key": "com.example.dev.1", "description": "Device N", "hidden": True},
        {"key": "com.example.ip.0", "description": "Address N", "requires": ["com.example.proto.0", ["static"]]},
        {"key": "com.example.ip.1", "description": "Address N", "hidden": True,
         "requires": ["com.example.proto.1", ["static"]]},
    ]
    assert spec.enumerate("cleanup") == []


def test_validation_names_key_and_value_and_hides_secrets():
    spec, calls = make_spec()
    with pytest.raises(ValidationError) as info:
        spec.run("configure", {"com.example.name": "bad_name", "com.example.secret": "s3cr3tvalue",
                               "com.example.mode": "c", "com.example.ip.3": "300.1.1.1"})
    text = str(info.value)
    assert "com.example.name: value 'bad_name' is invalid" in text
    assert "com.example.mode: value 'c' is not one of: a, b" in text
    assert "com.example.ip.3: value '300.1.1.1' is invalid: not an IPv4 address" in text
    assert "com.example.secret: value (hidden) is invalid" in text
    assert "s3cr3tvalue" not in text
    assert calls == []  # nothing ran


def test_handler_changes_are_merged_into_the_output():
    spec, calls = make_spec()
    out = spec.run("configure", {"com.example.name": "host1", "other.key": "kept"})
    assert out == {"com.example.name": "host1", "other.key": "kept", "com.example.added": "yes"}
    assert calls == [{"com.example.name": "host1", "other.key": "kept"}]


def test_target_without_handler_passes_params_through():
    spec, _ = make_spec()
    assert spec.run("cleanup", {"a": "b"}) == {"a": "b"}


def test_indices_and_key_matching():
    spec, _ = make_spec()
    params = {"com.example.dev.0": "eth0", "com.example.ip.2": "10.0.0.1", "com.example.dev.x": "no"}
    assert spec.indices(params, "com.example.dev.{n}", "com.example.ip.{n}") == [0, 2]
    key, n = spec.key_for("com.example.ip.12")
    assert (key.key, n) == ("com.example.ip.{n}", 12)
    assert spec.key_for("com.example.ip.01") is None


def test_header_matches_oracle_format_and_names_the_spec():
    spec, _ = make_spec()
    assert spec.header() == ("### BEGIN PLUGIN INFO\n# name: example\n# configure: 50\n"
                             "# cleanup: 40\n# description: An example module.\n"
                             "# spec: templateconfig.modules.example\n### END PLUGIN INFO")


def test_declaring_an_undeclared_target_fails():
    spec, _ = make_spec()
    with pytest.raises(ValueError):
        spec.target("migrate")


def test_contract_function_speaks_json():
    spec, _ = make_spec()
    do_configure = spec._contract_function("configure")
    assert json.loads(do_configure('{"com.example.name": "h"}'))["com.example.added"] == "yes"


@pytest.fixture
def guest_root(tmp_path, monkeypatch):
    """A sandbox root (no journal, plan mode off) and a fresh view of it."""
    from templateconfig import common

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(root))
    monkeypatch.delenv("OVM_TEMPLATE_CONFIG_DRY_RUN", raising=False)
    monkeypatch.delenv("OVM_TEMPLATE_CONFIG_ACTIONS", raising=False)
    common.new_guest()
    return root


def test_a_module_that_needs_root_plans_only_without_root(guest_root, tmp_path, monkeypatch,
                                                         mocker, capsys):
    """The demo and sandboxes may run as a user: such a module plans and says so.

    os.geteuid is patched: a real unprivileged process cannot run this machine's Python
    (it lives under /root), so the uid is the one thing mocked here.
    """
    from templateconfig import common

    root = guest_root
    journal = tmp_path / "journal"
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ACTIONS", str(journal))
    common.new_guest()
    geteuid = mocker.patch("os.geteuid", return_value=1000)
    spec = ModuleSpec("acct", {"configure": 60}, "Needs root.", needs_root=True)

    @spec.target("configure")
    def configure(params):
        common.write_file("/etc/made-by-acct", "x\n")

    assert spec.run("configure", {"k": "v"}) == {"k": "v"}
    assert geteuid.called
    assert "acct: not running as root: planning only (dry run)" in capsys.readouterr().err
    assert not (root / "etc/made-by-acct").exists()
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(r["op"], r["path"], r["applied"]) for r in records] == [("write", "/etc/made-by-acct", False)]
    # plan mode was told to the file layer, not written into the environment
    assert "OVM_TEMPLATE_CONFIG_DRY_RUN" not in os.environ


def test_a_module_that_needs_root_acts_as_root(guest_root):
    from templateconfig import common

    root = guest_root
    spec = ModuleSpec("acct", {"configure": 60}, "Needs root.", needs_root=True)

    @spec.target("configure")
    def configure(params):
        common.write_file("/etc/made-by-acct", "x\n")

    spec.run("configure", {})
    assert (root / "etc/made-by-acct").read_text() == "x\n"
