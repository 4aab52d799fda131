"""The runner: run the enabled modules of a target, in order, each in its own process.

What a run does (docs/module-contract.md):

* The modules linked for the target run in (priority, name) order. Each reads the
  accumulated params (one JSON object) on stdin and prints the resulting object; that
  output is the next module's input. Keys added or changed are collected.
* Before anything runs, every module is enumerated and the params are validated against
  all their descriptors; a missing required key or a value outside its choices stops the
  run up front, touching nothing.
* A module that fails (non-zero exit, crash, invalid JSON output, timeout, SyntaxError,
  missing interpreter) is reported with its redacted stderr; the run goes on with the
  params as they were before it.
* Progress goes to the run report, the run log and a durable run state, so that a run
  killed half-way resumes after the modules that completed (formats in docs/formats.md).

One file per job:

``contract``   what the command line, the runner and module processes share (cheap)
``runner``     a target's modules, their descriptors, validation, the run lock, the run
``steps``      one run, step by step: start, resume, skip, run, finish, interrupted
``scripts``    a module script: its record, its interpreter line
``preload``    what the runner imports once so that forked module processes need not
``launcher``   the parent side of module processes: start, feed, collect, kill, reap
``child``      inside a forked module process: become what a fresh interpreter would be
``state``      the resumable run state and its fingerprint of the params
``report``     the run report (``ovmd --status`` reads it)
``runlog``     the run log's handler (root-only, redacted)
``enumcache``  the descriptors of unchanged module scripts
``lock``       one run at a time per root
``plan``       recorded actions -> the dry-run plan
``params``     where a run's params come from (stdin, a descriptor, OVF, ovmd, the console)
``firstboot``  the runner's side of first boot (``--initial-config``)

Nothing is imported here: ``ovm-template-config --help`` imports this package.
"""
