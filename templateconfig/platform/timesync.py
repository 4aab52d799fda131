"""The NTP clients a guest may use: chrony, ntpd, systemd-timesyncd.

A platform picks the client the guest has (``Platform.time_sync()``); the datetime
module calls :meth:`TimeSync.configure` with validated servers and the local-time-source
flag, and never asks which client it is. Where the client reads a drop-in directory we
write our own file there; otherwise our lines go into one marked block of the shared
file (see :mod:`templateconfig.platform.textedit`), undone by cleanup.

Requested servers replace the vendor sources, so that the client uses exactly them:

- chrony: the ``server``/``pool``/``peer`` lines and the ``sourcedir`` directives other
  than ours (``/run/chrony-dhcp``, the servers DHCP offered) of the main file, i.e.
  Debian's ``chrony/chrony.conf`` (our servers in ``sources.d``), EL9's ``chrony.conf``
  (ours in ``chrony.d``), EL7/8's ``chrony.conf`` (ours in its block);
- ntpd: the ``server``/``pool``/``peer`` lines of ``ntp.conf`` (EL5/6, Debian's ntp and
  ntpsec), but never the local clock ``127.127.1.0`` unless a local source is requested;
- systemd-timesyncd: ``FallbackNTP=`` (the vendor's, used when no server is set) is
  emptied; ``NTP=`` holds ours.

Lines switched off are marked (see :mod:`templateconfig.platform.textedit`), so cleanup
gives them back.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from templateconfig import common
from templateconfig.platform.textedit import apply_managed, strip_managed

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges

log = logging.getLogger(__name__)

HEADER = "# Written by ovm-template-config (datetime module); its cleanup target undoes this.\n"
LOCAL_STRATUM = 10


def _server_line(line: str) -> bool:
    """A source line of ntp.conf or chrony.conf (``server``, ``pool``, ``peer``), but not
    ntpd's local clock (``127.127.1.0``)."""
    words = line.split()
    return bool(words) and words[0] in ("server", "pool", "peer") \
        and not words[1:2] == ["127.127.1.0"]


class TimeSync:
    """One NTP client: its service and how its servers are configured."""

    name = ""
    service = ""

    def configure(self, files: FileChanges, servers: Sequence[str], local_source: bool) -> None:
        raise NotImplementedError


class Chrony(TimeSync):
    """chrony. ``conf_dir`` (``*.conf``) and ``sources_dir`` (``*.sources``, server lines
    only) are drop-in directories where the guest's chrony supports them; if the main
    file does not read ``conf_dir`` yet, an ``include`` line is added to it.

    Requested servers replace the vendor sources of the main file (see the module
    docstring); files that others put into the drop-in directories are left alone."""

    name = "chrony"

    def __init__(self, conf: str, service: str, conf_dir: Optional[str] = None,
                 sources_dir: Optional[str] = None) -> None:
        self.conf = conf
        self.service = service
        self.conf_dir = conf_dir
        self.sources_dir = sources_dir

    @staticmethod
    def _reads(text: str, directory: str) -> bool:
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("confdir", "sourcedir", "include") \
                    and words[1].rstrip("/").startswith(directory):
                return True
        return False

    @staticmethod
    def _vendor_source(keep: Optional[str]) -> Callable[[str], bool]:
        """Whether a line of the main file is a source of the vendor's (``keep``: the
        ``sourcedir`` that holds ours)."""
        def vendor(line: str) -> bool:
            words = line.split()
            if words[:1] == ["sourcedir"] and len(words) > 1:
                return words[1].rstrip("/") != keep
            return _server_line(line)
        return vendor

    def configure(self, files: FileChanges, servers: Sequence[str], local_source: bool) -> None:
        server_lines = ["server %s iburst" % s for s in servers]
        local_lines = ["local stratum %d" % LOCAL_STRATUM] if local_source else []
        text = common.read_file(self.conf) or ""
        base = strip_managed(text, "datetime")
        own_sources = self.sources_dir is not None and self.conf_dir is not None \
            and self._reads(base, self.sources_dir)
        disable = self._vendor_source(self.sources_dir if own_sources else None) \
            if servers else None
        if self.conf_dir is None:
            files.write_file(self.conf, apply_managed(
                text, "datetime", server_lines + local_lines, disable=disable))
            return
        if own_sources:
            self._drop_in(files, "%s/ovm.sources" % self.sources_dir, server_lines)
            conf_lines = local_lines
        else:
            conf_lines = server_lines + local_lines
        self._drop_in(files, "%s/ovm.conf" % self.conf_dir, conf_lines)
        include = ["include %s/*.conf" % self.conf_dir] \
            if conf_lines and not self._reads(base, self.conf_dir) else []
        files.write_file(self.conf, apply_managed(text, "datetime", include, disable=disable))

    @staticmethod
    def _drop_in(files: FileChanges, path: str, lines: List[str]) -> None:
        if lines:
            files.write_file(path, HEADER + "\n".join(lines) + "\n", mode=0o644)
        else:
            files.remove_file(path)


class Ntpd(TimeSync):
    """ntpd (EL5/6; ntp or ntpsec on Debian): server lines in ``ntp.conf``, where the
    vendor's ``server``/``pool``/``peer`` lines are switched off; the local clock as
    ``127.127.1.0``."""

    name = "ntpd"

    def __init__(self, conf: str = "/etc/ntp.conf", service: str = "ntpd") -> None:
        self.conf = conf
        self.service = service

    def configure(self, files: FileChanges, servers: Sequence[str], local_source: bool) -> None:
        lines = ["server %s iburst" % s for s in servers]
        if local_source:
            lines += ["server 127.127.1.0", "fudge 127.127.1.0 stratum %d" % LOCAL_STRATUM]

        def disable(line: str) -> bool:
            words = line.split()
            if servers and _server_line(line):
                return True
            # The template's own local-clock lines: ours replace them.
            return local_source and len(words) >= 2 and words[0] in ("server", "fudge") \
                and words[1] == "127.127.1.0"

        text = common.read_file(self.conf) or ""
        files.write_file(self.conf, apply_managed(text, "datetime", lines, disable=disable))


class Timesyncd(TimeSync):
    """systemd-timesyncd (Ubuntu's default): ``timesyncd.conf.d/ovm.conf``. ``NTP=``
    takes the requested servers; the vendor's (``FallbackNTP=``, e.g. ntp.ubuntu.com) are
    emptied. It cannot serve the local clock; a request for that is reported, not
    failed."""

    name = "systemd-timesyncd"
    service = "systemd-timesyncd"

    def __init__(self, directory: str = "/etc/systemd/timesyncd.conf.d") -> None:
        self.path = directory + "/ovm.conf"

    def configure(self, files: FileChanges, servers: Sequence[str], local_source: bool) -> None:
        if local_source:
            log.warning("systemd-timesyncd cannot use the local clock as a time source: "
                        "com.oracle.linux.datetime.ntp-local-time-source ignored "
                        "(install chrony for that)")
        if servers:
            files.write_file(self.path, HEADER + "[Time]\nNTP=%s\nFallbackNTP=\n"
                             % " ".join(servers), mode=0o644)
        else:
            files.remove_file(self.path)

