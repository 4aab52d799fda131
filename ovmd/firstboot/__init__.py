"""First boot: turning a cloned template into a configured machine, exactly once.

This package owns everything about it that the daemon (``ovmd``) and the runner
(``ovm-template-config``) share, so that the contract between them is written once:

``flag``
    ``INITIAL_CONFIG=yes|no`` in ``/etc/sysconfig/ovm-template-initial-config`` (OL7+)
    and ``/etc/sysconfig/ovmd`` (OL5/6): "not configured yet" versus "configured".
``contract``
    the trigger key, the status key the daemon sends back to the host and its values,
    and the exit status by which the runner tells the daemon "already configured".
``watch``
    the inotify watch with which the console dialog notices that the message path won.
``machine``
    the daemon's side: the state machine that decides when the message path runs
    (waiting for the trigger, the quiet period, the run, its outcome), with its table.

Two paths may configure a freshly cloned guest: the message path (the host sends
parameters, ``ovmd`` runs ``ovm-template-config --initial-config --input FD configure``)
and the console dialog (``ovm-template-initial-config.service`` runs
``ovm-template-config --console-input --initial-config configure``). Whichever completes
first wins; the other stands down cleanly:

* An ``--initial-config`` run takes the run lock, re-reads the flag *under the lock*,
  runs only if it is still yes, and sets it to no (:func:`flag.mark_configured`) when the
  run succeeded, still under the lock. So exactly one first-boot run happens; a later
  one exits :data:`contract.EXIT_ALREADY_CONFIGURED`, and the daemon stands down.
* The console dialog watches the sysconfig directory (:class:`watch.SysconfigWatch`)
  while it prompts, and stops as soon as the flag turns no.
"""
