"""The ovmd daemon: one event loop over XenStore, the control socket and signals.

Everything is event-driven (no polling loop): a ``selectors`` loop waits on the XenStore
connection (the watches on ``to-guest/last-write`` and ``device/vif``), the kernel's
routing socket (address changes), the control socket, a signal wakeup
descriptor, the pipes of a running ``ovm-template-config`` child, and the nearest timer
(the first-boot quiet period, the XenStore reconnect backoff). Idle, it sleeps in
``select()``.

Message flow: fetch pending host messages -> store them durably in the
:class:`~ovmd.cache.ParamCache` -> delete them from XenStore. First boot: when
INITIAL_CONFIG=yes and the trigger key is cached, a quiet period (restarted by every new
message) is followed by ``ovm-template-config configure`` as a child process; the loop
keeps serving meanwhile. :mod:`ovmd.firstboot.machine` decides when.

One file per job:

``agent``       :class:`Daemon`: builds the parts, connects them, start to READY=1 to stop
``loop``        the event loop: descriptors, signals, named timers
``hostlink``    XenStore: the connection and its reconnects, host messages in, the outbox
``addresses``   the guest's IP addresses to the host, from rtnetlink notifications
``requests``    the control requests' handlers (the table is :data:`ovmd.control.REQUESTS`)
``runs``        the runner slot: one ``ovm-template-config`` run at a time, and its result
``targetrun``   one ``ovm-template-config`` child process and its pipes
``lifecycle``   the targets the host's events and the guest's own shutdown run
``sealing``     ``ovmd --seal`` on a running guest
``clone``       ``DETECT_CLONE``: a guest started as another VM re-arms its first boot
``service``     running as a system service: logging, the pid file, systemd, ovmapi
"""
from __future__ import annotations

from .agent import Daemon
from .service import DaemonError, LogSetup, PidFile, check_no_ovmapi, sd_notify
from .targetrun import TargetRun

__all__ = ["Daemon", "DaemonError", "LogSetup", "PidFile", "TargetRun", "check_no_ovmapi",
           "sd_notify"]
