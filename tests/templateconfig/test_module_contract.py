"""The module contract (templateconfig.cli): module scripts run as real processes.

Each test writes a module script into a temporary directory and runs it the way the runner
does: argv selects enumerate or a target, params go in on stdin as one JSON object, the
result comes back on stdout, and the exit status says what happened. The same contract
checks run against a Python module and a plain /bin/sh module, so the contract is
language-neutral.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from templateconfig.header import parse_header

PYTHON = sys.executable
VENV_BIN = str(Path(sys.executable).parent)


def write_script(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    path.chmod(0o755)
    return path


def run_module(script: Path, *args: str, stdin: str = "", direct: bool = False,
               extra_env: dict = None):
    """Run a module as the runner would; ``direct`` executes it through its shebang."""
    if direct:
        argv = [str(script)]
    elif script.read_text(encoding="utf-8").startswith("#!/bin/sh"):
        argv = ["/bin/sh", str(script)]
    else:
        argv = [PYTHON, str(script)]
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(extra_env or {})
    return subprocess.run(argv + list(args), input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=30)


ORACLE_STYLE = '''
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: greeter
# configure: 50
# cleanup: 50
# description: An example written the way Oracle's modules are.
### END PLUGIN INFO
try:
    import json
except ImportError:
    import simplejson as json

from templateconfig.cli import main


def do_enumerate(target):
    param = []
    if target == 'configure':
        param += [{'key': 'com.example.greeting', 'description': 'Greeting',
                   'required': True},
                  {'key': 'com.example.secret', 'description': 'Secret',
                   'password': True, 'hidden': True}]
    return json.dumps(param)


def do_configure(param):
    param = json.loads(param)
    param['com.example.seen'] = param.get('com.example.greeting', '') + '!'
    return json.dumps(param)


def do_cleanup(param):
    # Defined, but never registered below: the header lists cleanup anyway.
    raise RuntimeError('do_cleanup must not be called')


if __name__ == '__main__':
    main(do_enumerate, {'configure': do_configure})
'''

SHELL_MODULE = r'''
#!/bin/sh
### BEGIN PLUGIN INFO
# name: greeter
# configure: 50
# cleanup: 50
# description: The same module in plain sh: the contract is language-neutral.
### END PLUGIN INFO
case "$1" in
    --enumerate|-e)
        if [ "$2" = configure ]; then
            echo '[{"key": "com.example.greeting", "description": "Greeting", "required": true},'
            echo ' {"key": "com.example.secret", "description": "Secret", "password": true, "hidden": true}]'
        else
            echo '[]'
        fi ;;
    configure)
        input=$(cat)
        greeting=$(printf '%s' "$input" | sed -n 's/.*"com\.example\.greeting": *"\([^"]*\)".*/\1/p')
        body=$(printf '%s' "$input" | sed 's/^[[:space:]]*{//; s/}[[:space:]]*$//')
        if [ -n "$(printf '%s' "$body" | tr -d '[:space:]')" ]; then body="$body, "; fi
        printf '{%s"com.example.seen": "%s!"}\n' "$body" "$greeting" ;;
    cleanup)
        cat
        echo "greeter: target cleanup is not registered; params passed through" >&2 ;;
    *)
        echo "usage: greeter --enumerate TARGET | greeter TARGET" >&2
        exit 2 ;;
esac
'''


@pytest.fixture(params=["python", "sh"])
def greeter(request, tmp_path) -> Path:
    """The same module twice: once in Python on templateconfig.cli, once in plain sh."""
    text = ORACLE_STYLE if request.param == "python" else SHELL_MODULE
    return write_script(tmp_path, "greeter", text)


class TestContractInAnyLanguage:
    def test_header_parses(self, greeter):
        info = parse_header(str(greeter))
        assert info.name == "greeter"
        assert info.targets == {"configure": 50, "cleanup": 50}

    def test_enumerate_prints_descriptors(self, greeter):
        result = run_module(greeter, "--enumerate", "configure")
        assert result.returncode == 0, result.stderr
        descriptors = json.loads(result.stdout)
        assert [d["key"] for d in descriptors] == ["com.example.greeting", "com.example.secret"]
        assert descriptors[0]["required"] is True
        assert descriptors[1]["password"] is True and descriptors[1]["hidden"] is True

    def test_short_enumerate_option(self, greeter):
        result = run_module(greeter, "-e", "configure")
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)) == 2

    def test_enumerate_of_a_target_without_params_is_an_empty_list(self, greeter):
        result = run_module(greeter, "--enumerate", "cleanup")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == []

    def test_target_keeps_every_key_and_adds_one(self, greeter):
        params = {"com.example.greeting": "hello", "com.oracle.linux.other": "kept"}
        result = run_module(greeter, "configure", stdin=json.dumps(params))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == dict(params, **{"com.example.seen": "hello!"})

    def test_target_with_empty_params(self, greeter):
        result = run_module(greeter, "configure", stdin="{}")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"com.example.seen": "!"}

    def test_unregistered_target_passes_params_through(self, greeter):
        params = {"com.example.greeting": "hello"}
        result = run_module(greeter, "cleanup", stdin=json.dumps(params))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == params
        assert "not registered" in result.stderr

    def test_unknown_target_name_is_a_usage_error(self, greeter):
        result = run_module(greeter, "configur", stdin="{}")
        assert result.returncode == 2
        assert result.stdout == ""
        assert "usage" in result.stderr


class TestOracleStyleModule:
    def test_runs_through_env_python_shebang(self, tmp_path):
        script = write_script(tmp_path, "greeter", ORACLE_STYLE)
        result = run_module(script, "configure", stdin='{"com.example.greeting": "hi"}',
                            direct=True)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["com.example.seen"] == "hi!"

    def test_defined_but_unregistered_function_is_not_called(self, tmp_path):
        script = write_script(tmp_path, "greeter", ORACLE_STYLE)
        result = run_module(script, "cleanup", stdin='{"a": "b"}')
        assert result.returncode == 0
        assert "must not be called" not in result.stderr
        assert json.loads(result.stdout) == {"a": "b"}


def python_module(tmp_path: Path, body: str, targets: str = "{'configure': do_configure}",
                  name: str = "mod") -> Path:
    text = textwrap.dedent('''
        #!/usr/bin/env python
        ### BEGIN PLUGIN INFO
        # name: {name}
        # configure: 50
        ### END PLUGIN INFO
        import json
        from templateconfig.cli import main

        def do_enumerate(target):
            return json.dumps([])

        ''').format(name=name) + textwrap.dedent(body) + textwrap.dedent('''

        if __name__ == '__main__':
            main(do_enumerate, {targets})
        ''').format(targets=targets)
    return write_script(tmp_path, name, text)


class TestKeysAndValues:
    def test_hyphenated_and_underscored_keys_round_trip(self, tmp_path):
        script = python_module(tmp_path, '''
            def do_configure(param):
                param = json.loads(param)
                servers = param['com.oracle.linux.datetime.ntp-servers'].split(',')
                param['com.oracle.linux.datetime.ntp-local-time-source'] = 'False'
                param['com.example.ntp_count'] = str(len(servers))
                return json.dumps(param)
            ''')
        params = {"com.oracle.linux.datetime.ntp-servers": "a.example,b.example",
                  "com.example.under_score": "True"}
        result = run_module(script, "configure", stdin=json.dumps(params))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == dict(params, **{
            "com.oracle.linux.datetime.ntp-local-time-source": "False",
            "com.example.ntp_count": "2"})

    @pytest.mark.parametrize("extra_env", [{}, {"LC_ALL": "C", "PYTHONIOENCODING": "ascii"}],
                             ids=["default", "ascii-locale"])
    def test_non_ascii_values_round_trip_as_utf8(self, tmp_path, extra_env):
        script = python_module(tmp_path, '''
            def do_configure(param):
                param = json.loads(param)
                param['com.example.motd'] += ' ✓'
                return json.dumps(param, ensure_ascii=False)
            ''')
        params = {"com.example.motd": "Grüße, 世界"}
        result = run_module(script, "configure", stdin=json.dumps(params, ensure_ascii=False),
                            extra_env=extra_env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"com.example.motd": "Grüße, 世界 ✓"}


class TestLenientReturnValues:
    @pytest.mark.parametrize("returned", [
        "param",                                     # the JSON string itself
        "param.encode('utf-8')",                     # bytes
        "json.loads(param)",                         # a dict
        "None",                                      # nothing changed
    ])
    def test_str_bytes_dict_or_none(self, tmp_path, returned):
        script = python_module(tmp_path, '''
            def do_configure(param):
                return %s
            ''' % returned)
        result = run_module(script, "configure", stdin='{"k": "v"}')
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"k": "v"}

    def test_enumerate_may_return_a_list(self, tmp_path):
        script = write_script(tmp_path, "mod", '''
            from templateconfig.cli import main
            main(lambda target: [{"key": "k.%s" % target}], {})
            ''')
        result = run_module(script, "--enumerate=configure")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [{"key": "k.configure"}]

    def test_unserialisable_return_is_a_module_failure(self, tmp_path):
        script = python_module(tmp_path, '''
            def do_configure(param):
                return object()
            ''')
        result = run_module(script, "configure", stdin="{}")
        assert result.returncode == 1
        assert "not JSON text" in result.stderr


class TestFailures:
    def test_syntax_error_exits_non_zero_and_shows_it(self, tmp_path):
        script = write_script(tmp_path, "broken", '''
            #!/usr/bin/env python
            ### BEGIN PLUGIN INFO
            # name: broken
            # configure: 10
            ### END PLUGIN INFO
            from templateconfig.cli import main
            def do_configure(param)
                return param
            ''')
        result = run_module(script, "configure", stdin="{}")
        assert result.returncode != 0
        assert "SyntaxError" in result.stderr
        assert result.stdout == ""

    def test_exception_exits_1_with_traceback(self, tmp_path):
        script = python_module(tmp_path, '''
            def do_configure(param):
                raise ValueError('com.example.port must be a number, got "x"')
            ''')
        result = run_module(script, "configure", stdin='{"com.example.port": "x"}')
        assert result.returncode == 1
        assert "Traceback" in result.stderr
        assert 'ValueError: com.example.port must be a number, got "x"' in result.stderr
        assert result.stdout == ""

    def test_exception_in_enumerate_exits_1(self, tmp_path):
        script = write_script(tmp_path, "mod", '''
            from templateconfig.cli import main
            def do_enumerate(target):
                raise KeyError(target)
            main(do_enumerate, {})
            ''')
        result = run_module(script, "--enumerate", "configure")
        assert result.returncode == 1
        assert "KeyError: 'configure'" in result.stderr

    @pytest.mark.parametrize("stdin, message", [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', "must hold a JSON object"),
    ])
    def test_bad_stdin_exits_2_with_a_clear_message(self, tmp_path, stdin, message):
        script = python_module(tmp_path, '''
            def do_configure(param):
                raise AssertionError('must not be called')
            ''')
        result = run_module(script, "configure", stdin=stdin)
        assert result.returncode == 2
        assert message in result.stderr
        assert "must not be called" not in result.stderr
        assert result.stdout == ""

    def test_empty_stdin_counts_as_an_empty_object(self, tmp_path):
        script = python_module(tmp_path, '''
            def do_configure(param):
                assert json.loads(param) == {}
                return param
            ''')
        result = run_module(script, "configure", stdin="")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {}

    @pytest.mark.parametrize("args", [
        [],                                   # no target
        ["--enumerate"],                      # enumerate without a target
        ["--enumerate", "configure", "x"],    # too many
        ["configure", "cleanup"],             # two targets
        ["--frobnicate"],                     # unknown option
        ["--prepare"],                        # prepare without a target
    ])
    def test_bad_usage_exits_2_with_usage(self, tmp_path, args):
        script = python_module(tmp_path, '''
            def do_configure(param):
                return param
            ''')
        result = run_module(script, *args, stdin="{}")
        assert result.returncode == 2
        assert "usage:" in result.stderr
        assert result.stdout == ""


class TestPrepare:
    """``SCRIPT --prepare TARGET``: work for TARGET that needs no params, into the
    staging directory the runner names; nothing on stdout, the target not run."""

    def test_the_registered_preparer_runs_and_the_target_does_not(self, tmp_path):
        staging = tmp_path / "staging"
        staging.mkdir()
        script = python_module(tmp_path, """
            import os

            def do_configure(param):
                raise SystemExit("configure must not run")

            def prepare():
                with open(os.environ["OVM_TEMPLATE_CONFIG_STAGING"] + "/made", "w") as f:
                    f.write("ok")
            """, targets="{'configure': do_configure}, prepare={'configure': prepare}")
        result = run_module(script, "--prepare", "configure",
                            extra_env={"OVM_TEMPLATE_CONFIG_STAGING": str(staging)})
        assert (result.returncode, result.stdout) == (0, "")
        assert (staging / "made").read_text() == "ok"

    def test_a_module_with_nothing_to_prepare_does_nothing(self, tmp_path):
        script = python_module(tmp_path, """
            def do_configure(param):
                raise SystemExit("configure must not run")
            """)
        result = run_module(script, "--prepare", "configure")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


class TestHelpAndVersion:
    def test_help_names_the_registered_targets(self, tmp_path):
        script = python_module(tmp_path, '''
            def do_configure(param):
                return param
            ''')
        result = run_module(script, "--help")
        assert result.returncode == 0
        assert "registered targets: configure" in result.stdout
        assert "exit status" in result.stdout

    def test_version(self, tmp_path):
        script = python_module(tmp_path, '''
            def do_configure(param):
                return param
            ''')
        result = run_module(script, "--version")
        assert result.returncode == 0
        assert "templateconfig" in result.stdout
