"""Fixtures for the daemon tests: a sandbox guest root, the real ``ovmd`` as a process,
and the host side (``ovm-vmmessage``'s HostChannel on the dev server's dom0 socket)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import List

import pytest
from daemon_helpers import GUEST, Ovmd

from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreClient


@pytest.fixture
def root():
    """A sandbox guest root with a short path (unix socket paths are limited)."""
    base = Path(tempfile.mkdtemp(prefix="ovr-", dir="/tmp"))
    path = base / "root"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dom0(xenstored):
    """A dom0 XenStore connection to the development server."""
    client = XenStoreClient.open(xenstored.dom0_socket)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def host(dom0):
    """The host end of guest 1's channel."""
    return HostChannel(dom0, GUEST)


@pytest.fixture
def ovmd_factory(root, xenstored):
    started: List[Ovmd] = []

    def make(extra: List[str] = (), start: bool = True, env=None, root_dir: Path = None,
             prefix: List[str] = ()) -> Ovmd:
        daemon = Ovmd(root_dir or root, xenstored.guest_socket(GUEST), extra, env, prefix)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)


@pytest.fixture
def ovmd(ovmd_factory):
    """A running daemon for guest 1 with an empty sandbox root."""
    return ovmd_factory()
