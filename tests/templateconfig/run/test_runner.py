"""The runner: order, chaining, changed keys, failures, validation, fork == fresh process.

Every test runs real module scripts in real processes under a sandbox root; the
``mode`` fixture runs each test twice, once with forked children and once with a fresh
interpreter per module (``OVM_TEMPLATE_CONFIG_NO_FORK``).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
from runner_helpers import (
    add_python_module,
    add_script,
    add_shell_module,
    guest,
    guest_tree,
    wait_readable,
)

from ovmd.runreport import read_report
from templateconfig.run.runner import Runner, RunnerError, ValidationError, run_target
from templateconfig.run.scripts import is_python_script


@pytest.fixture(params=["fork", "fresh"])
def fork(request):
    return request.param == "fork"


def append_name(name):
    return 'params["order"] = ",".join(filter(None, [params.get("order", ""), %r]))' % name


class TestOrderAndChaining:
    def test_priority_then_name_order_and_params_chain(self, tmp_path, fork):
        paths = guest(tmp_path)
        for name, priority in (("bravo", 50), ("alpha", 50), ("zulu", 10), ("mike", 90)):
            add_python_module(paths, name, priority, append_name(name))
        result = run_target(paths, "configure", {}, fork=fork)
        assert result.ok
        assert [o.module.name for o in result.outcomes] == ["zulu", "alpha", "bravo", "mike"]
        # each module saw the previous one's output
        assert result.params["order"] == "zulu,alpha,bravo,mike"

    def test_changed_keys_are_added_or_changed_keys_only(self, tmp_path, fork):
        paths = guest(tmp_path)
        add_python_module(paths, "one", 10, 'params["new"] = "1"\nparams["same"] = "x"')
        add_python_module(paths, "two", 20, 'params["changed"] = "after"\ndel params["gone"]')
        result = run_target(paths, "configure",
                            {"same": "x", "changed": "before", "gone": "g", "kept": "k"},
                            fork=fork)
        assert result.ok
        assert result.changed_keys == ["changed", "new"]
        assert result.params == {"same": "x", "changed": "after", "kept": "k", "new": "1"}
        assert result.outcomes[0].changed == {"new": "1"}
        assert result.outcomes[1].removed == ["gone"]
        assert result.report["changed_keys"] == ["changed", "new"]

    def test_a_shell_module_obeys_the_same_contract(self, tmp_path, fork):
        paths = guest(tmp_path)
        add_python_module(paths, "first", 10, 'params["a"] = "1"')
        # a non-Python module: reads the object on stdin, prints it back extended
        add_shell_module(paths, "shell", 20, '''\
            input=$(cat)
            printf '%s\\n' "${input%\\}}, \\"from-shell\\": \\"$1\\"}"
            ''')
        add_python_module(paths, "last", 30, 'params["saw"] = params.get("from-shell", "")')
        result = run_target(paths, "configure", {"x": "y"}, fork=fork)
        assert result.ok, [o.error for o in result.outcomes]
        assert result.params == {"x": "y", "a": "1", "from-shell": "configure",
                                 "saw": "configure"}

    def test_only_one_module_with_script_option(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "one", 10, append_name("one"))
        add_python_module(paths, "two", 20, append_name("two"))
        result = run_target(paths, "configure", {}, only="two")
        assert [o.module.name for o in result.outcomes] == ["two"]
        assert result.params["order"] == "two"
        with pytest.raises(RunnerError, match="'three' is not enabled"):
            run_target(paths, "configure", {}, only="three")

    def test_only_modules_of_the_target_run(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "conf", 10, append_name("conf"))
        add_python_module(paths, "clean", 10, append_name("clean"), target="cleanup")
        assert run_target(paths, "cleanup", {}).params == {"order": "clean"}
        with pytest.raises(RunnerError, match="unknown target"):
            Runner(paths, "bogus")


FAILURES = {
    "non-zero exit": ('sys.stderr.write("giving up on %s\\n" % params["x"])\nsys.exit(3)',
                      "exited with status 3: giving up on y"),
    "crash": ('raise RuntimeError("module exploded")',
              "RuntimeError: module exploded"),
    "killed by a signal": ('import signal\nos.kill(os.getpid(), signal.SIGSEGV)',
                           "killed by SIGSEGV"),
    "invalid JSON": ('print("this is not json")\nsys.stdout.flush()\nos._exit(0)',
                     "printed invalid JSON on stdout"),
    "JSON that is not an object": ('print("[1, 2]")\nsys.stdout.flush()\nos._exit(0)',
                                   "printed a JSON list on stdout"),
    "timeout": ('import time\ntime.sleep(60)', "timed out after 1 s and was killed"),
}


class TestFailures:
    @pytest.mark.parametrize("kind", sorted(FAILURES))
    def test_failure_is_reported_and_the_run_continues(self, tmp_path, fork, kind):
        body, expected = FAILURES[kind]
        paths = guest(tmp_path)
        add_python_module(paths, "before", 10, 'params["before"] = "ran"')
        add_python_module(paths, "broken", 20, 'params["broken"] = "half"\n' + body)
        add_python_module(paths, "after", 30,
                          'params["after-saw"] = ",".join(sorted(params))')
        result = run_target(paths, "configure", {"x": "y"}, fork=fork, timeout=1)
        assert not result.ok
        statuses = [(o.module.name, o.status) for o in result.outcomes]
        assert statuses == [("before", "ok"), ("broken", "failed"), ("after", "ok")]
        error = result.outcomes[1].error
        assert expected in error
        assert "\n" not in error and "Traceback" not in error  # one line, what failed
        # the module after the failed one got the params as they were before it
        assert result.params["after-saw"] == "before,x"
        assert "broken" not in result.params
        assert result.report["status"] == "failed"
        assert result.report["modules"][1]["status"] == "failed"

    def test_syntax_error_module(self, tmp_path, fork):
        paths = guest(tmp_path)
        add_python_module(paths, "broken", 10, raw_source=(
            "#!/usr/bin/env python\n### BEGIN PLUGIN INFO\n# name: broken\n# configure: 10\n"
            "### END PLUGIN INFO\ndef broken(:\n    pass\n"))
        add_python_module(paths, "after", 20, 'params["after"] = "ran"')
        result = run_target(paths, "configure", {}, fork=fork)
        assert [o.status for o in result.outcomes] == ["failed", "ok"]
        error = result.outcomes[0].error
        assert error.startswith("SyntaxError: ") and error.endswith("scripts/broken, line 6)")
        assert "runner.py" not in error and "runpy" not in error  # no framework frames
        assert result.params == {"after": "ran"}

    def test_missing_interpreter(self, tmp_path, fork):
        paths = guest(tmp_path)
        add_shell_module(paths, "alien", 10, "cat\n", shebang="#!/nonexistent/bin/foo")
        add_python_module(paths, "after", 20, 'params["after"] = "ran"')
        result = run_target(paths, "configure", {}, fork=fork)
        assert [o.status for o in result.outcomes] == ["failed", "ok"]
        assert "interpreter /nonexistent/bin/foo was not found" in result.outcomes[0].error
        assert "exited with status 127" in result.outcomes[0].error

    def test_timeout_kills_the_modules_children_too(self, tmp_path, fork):
        paths = guest(tmp_path)
        alive = tmp_path / "alive"
        os.mkfifo(alive)
        # the module and the process it starts hold the FIFO open for writing while they
        # live; the module says "spawned" once its child runs
        add_python_module(paths, "spawner", 10, '''\
            import subprocess, time
            fifo = open(%r, "w")
            subprocess.Popen(["/bin/sh", "-c", "exec sleep 60"], stdout=fifo)
            fifo.write("spawned\\n")
            fifo.flush()
            time.sleep(60)
            ''' % str(alive))
        reader = os.open(alive, os.O_RDONLY | os.O_NONBLOCK)
        try:
            result = run_target(paths, "configure", {}, fork=fork, timeout=2)
            assert "timed out" in result.outcomes[0].error
            said = b""
            while True:  # end of file: every writer is gone
                assert wait_readable(reader), "a process the module started outlived it"
                chunk = os.read(reader, 100)
                if not chunk:
                    break
                said += chunk
        finally:
            os.close(reader)
        assert said == b"spawned\n"  # the whole process group was killed


class TestValidation:
    DESCRIPTORS = [
        {"key": "com.example.mode", "required": True, "choices": ["on", "off"]},
        {"key": "com.example.secret", "password": True, "required": False},
    ]

    @pytest.mark.parametrize("params, message", [
        ({}, "checker: com.example.mode: required, but not given"),
        ({"com.example.mode": "sideways"},
         "checker: com.example.mode: value 'sideways' is not one of: on, off"),
    ])
    def test_invalid_params_fail_up_front_and_touch_nothing(self, tmp_path, params, message):
        paths = guest(tmp_path)
        marker = tmp_path / "root" / "ran"
        add_python_module(paths, "first", 10, 'open(%r, "w").write("x")' % str(marker))
        add_python_module(paths, "checker", 50, "", descriptors=self.DESCRIPTORS)
        before = guest_tree(paths.root)
        with pytest.raises(ValidationError) as excinfo:
            run_target(paths, "configure", params)
        assert excinfo.value.problems == [message]
        # no module ran: only the run report and the log say why
        assert guest_tree(paths.root) == before
        report = read_report(paths)
        assert (report["status"], report["problems"], report["pid"]) == (
            "failed", [message], os.getpid())
        assert [m["status"] for m in report["modules"]] == ["pending", "pending"]
        assert excinfo.value.report == report
        assert message in open(paths.log_file).read()

    def test_valid_params_run(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "checker", 50, 'params["checked"] = "yes"',
                          descriptors=self.DESCRIPTORS)
        assert run_target(paths, "configure", {"com.example.mode": "on"}).ok

    def test_enumerate_failure_does_not_hide_the_other_modules(self, tmp_path):
        paths = guest(tmp_path)
        add_shell_module(paths, "noenum", 10, "cat\n", enumerate_output="not json")
        add_python_module(paths, "checker", 50, "", descriptors=self.DESCRIPTORS)
        runner = Runner(paths, "configure")
        enumeration = runner.enumerate()
        assert [(p, n) for p, n, _ in enumeration] == [(10, "noenum"), (50, "checker")]
        assert enumeration[1][2] == self.DESCRIPTORS
        assert "invalid descriptor list" in runner.enumerate_errors["noenum"]


class TestInterpreter:
    def test_env_python_module_runs_without_python_on_path(self, tmp_path, fork, monkeypatch):
        path = "/usr/sbin:/usr/bin:/sbin:/bin"
        assert shutil.which("python", path=path) is None
        monkeypatch.setenv("PATH", path)
        paths = guest(tmp_path)
        script = add_python_module(paths, "oracle", 10, 'params["ran"] = "yes"')
        with open(script) as handle:
            assert handle.readline() == "#!/usr/bin/env python\n"
        result = run_target(paths, "configure", {}, fork=fork)
        assert result.ok, result.outcomes[0].error
        assert result.params == {"ran": "yes"}

    def test_python_detection_by_shebang(self, tmp_path):
        for line, expected in (("#!/usr/bin/env python", True), ("#!/usr/bin/python3.9 -u", True),
                               ("#!/bin/sh", False), ("no shebang", False)):
            script = tmp_path / "s"
            script.write_text(line + "\n")
            assert is_python_script(str(script)) is expected, line


VIEW_BODY = '''\
import signal
view = {
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "name": __name__,
    "main_is_me": sys.modules["__main__"].__dict__ is globals(),
    "fds": sorted(os.listdir("/proc/self/fd"))[:4],
    "pgid_is_pid": os.getpgid(0) == os.getpid(),
    "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
    "sigint_python": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
    "sigpipe_ignored": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
    "path0": sys.path[0],
    "root_env": os.environ.get("OVM_TEMPLATE_CONFIG_ROOT"),
    "no_fork_env": os.environ.get("OVM_TEMPLATE_CONFIG_NO_FORK"),
    "stdin_tty": sys.stdin.isatty(),
    "stdout_encoding": sys.stdout.encoding,
    "log_handlers": len(__import__("logging").getLogger().handlers),
    "file": __file__,
}
sys.stderr.write("diagnostic line\\n")
params["view"] = json.dumps(view, sort_keys=True)
'''


class TestForkMatchesFreshInterpreter:
    def build(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "viewer", 10, VIEW_BODY)
        add_python_module(paths, "exits", 20,
                          'sys.stderr.write("bye\\n")\nsys.exit("fatal: %s" % params["k"])')
        add_python_module(paths, "crashes", 30, 'params["x"] = 1 / 0')
        add_python_module(paths, "atexit", 40, '''\
            import atexit
            atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
            params["atexit"] = "registered"
            ''')
        add_shell_module(paths, "shell", 50, 'cat\necho "shell stderr" >&2\n')
        add_python_module(paths, "syntax", 60, raw_source=(
            "#!/usr/bin/env python\n### BEGIN PLUGIN INFO\n# name: syntax\n# configure: 60\n"
            "### END PLUGIN INFO\nprint('unterminated\n"))
        return paths

    def test_same_outputs_both_ways(self, tmp_path, monkeypatch):
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_NO_FORK", "1")  # must not reach modules
        paths = self.build(tmp_path)
        forked = run_target(paths, "configure", {"k": "v"}, fork=True)
        fresh = run_target(paths, "configure", {"k": "v"}, fork=False)

        def observable(result):
            return [(o.module.name, o.status, o.error, o.changed, o.removed)
                    for o in result.outcomes], result.params, result.changed_keys

        assert observable(forked) == observable(fresh)
        view = json.loads(forked.params["view"])
        script = os.path.join(paths.scripts_dir, "viewer")
        assert view == {
            "argv": [script, "configure"], "cwd": "/", "name": "__main__",
            "main_is_me": True, "fds": ["0", "1", "2", "3"], "pgid_is_pid": True,
            "sigterm_default": True, "sigint_python": True,
            "sigpipe_ignored": True, "path0": paths.scripts_dir,
            "root_env": paths.root, "no_fork_env": None, "stdin_tty": False,
            "stdout_encoding": view["stdout_encoding"], "log_handlers": 0, "file": script}
        errors = {o.module.name: o.error for o in forked.outcomes}
        assert errors["exits"] == "exited with status 1: fatal: v"
        assert "ZeroDivisionError: division by zero" in errors["crashes"]
        assert "SyntaxError" in errors["syntax"]
        # a module's own atexit handlers run, the runner's do not
        assert forked.params["atexit"] == "registered"

    def test_atexit_output_reaches_stderr_both_ways(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "atexit", 10, '''\
            import atexit
            atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
            sys.exit(4)
            ''')
        for fork in (True, False):
            result = run_target(paths, "configure", {}, fork=fork)
            assert result.outcomes[0].error == "exited with status 4: atexit ran", fork


COUNTING_MODULE = '''\
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: counted
# configure: 10
### END PLUGIN INFO
import json, os, sys
from templateconfig.cli import main

HERE = {here!r}


def do_enumerate(target):
    with open(os.path.join(HERE, "enumerations"), "a") as handle:
        handle.write("x")
    if os.path.exists(os.path.join(HERE, "fail-enumerate")):
        sys.exit(1)
    with open(os.path.join(HERE, "descriptors.json")) as handle:
        return handle.read()


def do_configure(param):
    with open(os.path.join(HERE, "runs"), "a") as handle:
        handle.write("x")
    return param


if __name__ == "__main__":
    main(do_enumerate, {{"configure": do_configure}})
'''


class TestEnumerateCache:
    """A steady-state run forks once per module: descriptors come from the cache while
    the script is unchanged."""

    def build(self, tmp_path, choices=("on", "off")):
        paths = guest(tmp_path)
        self.here = tmp_path
        self.set_choices(choices)
        self.script = add_script(paths, "counted", COUNTING_MODULE.format(here=str(tmp_path)))
        return paths

    def set_choices(self, choices):
        (self.here / "descriptors.json").write_text(json.dumps(
            [{"key": "com.example.mode", "required": True, "choices": list(choices)}]))

    def count(self, name):
        path = self.here / name
        return len(path.read_text()) if path.exists() else 0

    def test_unchanged_scripts_are_enumerated_once(self, tmp_path, fork):
        paths = self.build(tmp_path)
        params = {"com.example.mode": "on"}
        assert run_target(paths, "configure", params, fork=fork).ok
        assert (self.count("enumerations"), self.count("runs")) == (1, 1)
        assert os.stat(paths.enumerate_cache_file).st_mode & 0o777 == 0o600
        assert run_target(paths, "configure", params, fork=fork).ok
        assert (self.count("enumerations"), self.count("runs")) == (1, 2)
        runner = Runner(paths, "configure", fork=fork)
        assert runner.enumerate()[0][2][0]["choices"] == ["on", "off"]  # from the cache
        assert self.count("enumerations") == 1
        with open(self.script, "a") as handle:  # a changed script is enumerated again
            handle.write("# edited\n")
        assert run_target(paths, "configure", params, fork=fork).ok
        assert (self.count("enumerations"), self.count("runs")) == (2, 3)

    def test_a_failed_enumeration_is_never_cached(self, tmp_path):
        paths = self.build(tmp_path)
        (tmp_path / "fail-enumerate").write_text("")
        runner = Runner(paths, "configure")
        runner.run({})
        assert "counted" in runner.enumerate_errors
        os.unlink(tmp_path / "fail-enumerate")
        assert run_target(paths, "configure", {"com.example.mode": "on"}).ok
        assert self.count("enumerations") == 2
        assert run_target(paths, "configure", {"com.example.mode": "on"}).ok
        assert self.count("enumerations") == 2

    def test_dry_runs_and_refused_params_write_no_cache(self, tmp_path):
        paths = self.build(tmp_path)
        with pytest.raises(ValidationError):
            run_target(paths, "configure", {})
        assert run_target(paths, "configure", {"com.example.mode": "on"}, dry_run=True).ok
        assert not os.path.exists(paths.enumerate_cache_file)

    def test_stale_cached_descriptors_do_not_refuse_what_fresh_ones_accept(self, tmp_path):
        paths = self.build(tmp_path)
        assert run_target(paths, "configure", {"com.example.mode": "on"}).ok
        self.set_choices(["on", "off", "auto"])  # the script itself is unchanged
        assert run_target(paths, "configure", {"com.example.mode": "auto"}).ok
        assert self.count("enumerations") == 2
        with pytest.raises(ValidationError) as excinfo:
            run_target(paths, "configure", {"com.example.mode": "sideways"})
        assert excinfo.value.problems == [
            "counted: com.example.mode: value 'sideways' is not one of: on, off, auto"]

    def test_the_cache_can_be_switched_off(self, tmp_path, monkeypatch):
        paths = self.build(tmp_path)
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE", "1")
        for _ in range(2):
            assert run_target(paths, "configure", {"com.example.mode": "on"}).ok
        assert self.count("enumerations") == 2
