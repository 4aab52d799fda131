"""Fault injection: the cache's disk fills up during a burst, then space returns.

``R/var/lib/ovmd`` is a real 1 MB tmpfs; the host (``ovm-vmmessage --batch``, the real
CLI) sends 400 messages of about 5 000 bytes (2 MB: twice the disk). While the disk is
full, every message is either stored durably or still in XenStore, and ``ovmd -l`` shows
only what is durable; the daemon says "the disk is full" once and does not reconnect.
When the tmpfs grows, everything is stored; a restart finds all of it.
"""
from __future__ import annotations

from daemon_helpers import wait_consumed
from reliability_helpers import (
    SEQUENCE_KEY,
    burst,
    crashes,
    durable,
    listed,
    outcome,
    send_with_cli,
    waiting,
)
from testlib import mounted_tmpfs


def test_a_full_disk_loses_nothing_and_space_coming_back_stores_everything(
        guest_root, xenstored, dom0, daemons, figures):
    messages = burst("disk", 400, size=5000)
    with mounted_tmpfs(guest_root / "var/lib/ovmd", "1m") as disk:
        daemon = daemons()
        send_with_cli(xenstored, messages)
        seen = daemon.wait_log(r"the disk is full")
        # while full: each message is durable or still waiting in XenStore, never gone
        stored = durable(daemon.paths)
        left = set(waiting(dom0).values())
        unique = [k for k, _ in messages if k != SEQUENCE_KEY]
        assert left, "the burst should not fit on the disk"
        assert [k for k in unique if k not in stored and k not in left] == []
        served = listed(daemon)
        assert {k: v for k, v in served.items() if k != SEQUENCE_KEY} == \
            {k: v for k, v in stored.items() if k != SEQUENCE_KEY}  # nothing not durable
        # a failed batch is rolled back, freeing what it had taken: take the rest too,
        # then a local store fails, clearly, and stores nothing
        ballast = disk.fill()
        local = daemon.cli("-p", "com.fault.local=" + "l" * 8000)
        assert local.returncode == 1 and "No space left on device" in local.stderr
        assert "com.fault.local" not in listed(daemon)
        ballast.unlink()
        disk.resize("16m")  # space returns
        daemon.wait_log(r"storing host messages again", since=seen)
        wait_consumed(dom0, len(messages))
        assert waiting(dom0) == {}
        log = daemon.log_text()
        assert log.count("the disk is full") == 1  # once per episode
        assert "XenStore error" not in log and "connected to XenStore again" not in log
        assert daemon.terminate() == 0
        restarted = daemons()
        final = listed(restarted)
        crashed = crashes(daemon) + crashes(restarted)
        restarted.terminate()
    figures.add("fault", "disk full mid-burst, then space returns (1 MB tmpfs)", tried=1,
                crashes=crashed, **outcome(messages, final))
    assert final == dict(messages) and crashed == 0
