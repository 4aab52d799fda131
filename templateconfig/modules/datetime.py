"""datetime: time zone, hardware clock, date and time, NTP (Oracle's ``datetime`` module, 50).

The time zone is checked against the guest's own zoneinfo database. Which files hold the
zone and the UTC flag, and which NTP client the guest has (chrony, ntpd,
systemd-timesyncd), is the platform's business (``templateconfig.platform``). Setting
the clock (``date``, ``hwclock``) acts on the running system only.

Applied once: a later run with the same params does nothing (the clock in particular is
not set back on every boot); new or changed keys apply again. ``cleanup`` restores every
file and service setting configure changed.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from typing import Dict, List, Optional

from templateconfig import common
from templateconfig.modules.support import validators
from templateconfig.modules.support.spec import CheckContext, Key, ModuleSpec
from templateconfig.modules.support.state import ModuleState, pending_params
from templateconfig.platform import detect

log = logging.getLogger(__name__)

PREFIX = "com.oracle.linux.datetime."
DATETIME = PREFIX + "datetime"
TIMEZONE = PREFIX + "timezone"
UTC = PREFIX + "utc"
NTP = PREFIX + "ntp"
NTP_SERVERS = PREFIX + "ntp-servers"
NTP_LOCAL = PREFIX + "ntp-local-time-source"

_DATETIME = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})\Z")
_ZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*\Z")


def parse_datetime(value: str) -> _dt.datetime:
    """``Y-M-D-h-m-s`` (``2011-4-7-9-2-42``) as a datetime; ValueError if malformed."""
    match = _DATETIME.match(value.strip())
    if not match:
        raise ValueError("expected year-month-day-hour-minute-second, e.g. 2011-4-7-9-2-42")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return _dt.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ValueError("no such date or time (%s)" % exc) from None


def check_datetime(value: str) -> None:
    parse_datetime(value)


def check_timezone(value: str) -> None:
    """A zone of the guest's ``/usr/share/zoneinfo`` (a TZif file), e.g. America/New_York."""
    if not _ZONE.match(value) or ".." in value.split("/"):
        raise ValueError("not a time zone name like America/New_York")
    path = detect().zoneinfo_path(value)
    data = common.read_bytes(path) if os.path.isfile(common.root_path(path)) else None
    if data is None or not data.startswith(b"TZif"):
        raise ValueError("unknown time zone: not in the guest's zoneinfo database")


def check_ntp_server(value: str) -> None:
    try:
        validators.ip_address(value)
    except ValueError:
        try:
            validators.hostname(value)
        except ValueError:
            raise ValueError("not a host name or IP address") from None


SPEC = ModuleSpec(
    "datetime", {"configure": 50, "cleanup": 50}, "Configure the date, time, time zone and NTP.",
    keys=[
        Key(DATETIME, "Date and time to set, as year-month-day-hour-minute-second "
            "(e.g. 2011-4-7-9-2-42).", hidden=True, validate=check_datetime),
        Key(TIMEZONE, "Time zone (e.g. America/New_York).", hidden=True, validate=check_timezone),
        Key(UTC, "The hardware clock keeps UTC: True or False.", hidden=True,
            validate=validators.boolean),
        Key(NTP, "Synchronise the clock with NTP: True or False.", hidden=True,
            validate=validators.boolean),
        Key(NTP_SERVERS, "NTP servers, comma-separated.", hidden=True,
            validate=validators.comma_list(check_ntp_server)),
        Key(NTP_LOCAL, "Use the local clock as a fallback time source: True or False.",
            hidden=True, validate=validators.boolean),
    ])


def _flag(params: Dict[str, str], key: str) -> Optional[bool]:
    return validators.is_true(params[key]) if key in params else None


@SPEC.check("configure")
def check_ntp_client(params: Dict[str, str], context: CheckContext) -> List[str]:
    """``ntp`` True needs an NTP client on the guest."""
    if _flag(params, NTP) and detect().time_sync() is None:
        return ["%s: value 'True' cannot be applied: no NTP client (chrony, ntpd, "
                "systemd-timesyncd) is installed on the guest" % NTP]
    return []


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    pending = pending_params(SPEC, params)
    if pending is None:
        return None
    state, digest = pending
    platform = detect()
    ntp = _flag(params, NTP)
    servers = validators.split_list(params.get(NTP_SERVERS, ""))
    local = bool(_flag(params, NTP_LOCAL))
    sync = platform.time_sync()  # (ntp True with no client was refused by the check)
    if ntp is False and (servers or local):
        log.warning("datetime: %s is False: %s and %s ignored", NTP, NTP_SERVERS, NTP_LOCAL)

    if TIMEZONE in params:
        platform.set_timezone(state, params[TIMEZONE])
    utc = _flag(params, UTC)
    if utc is not None:
        platform.set_hardware_clock_utc(state, utc)
    reconfigured = ntp is not False and sync is not None and bool(servers or local)
    if sync is not None and reconfigured:
        sync.configure(state, servers, local)
    elif ntp is not False and sync is None and (servers or local):
        log.warning("datetime: no NTP client is installed: %s ignored", NTP_SERVERS)

    # The running system.
    clock_mode = "--utc" if (utc if utc is not None else platform.hardware_clock_utc()) \
        else "--localtime"
    if DATETIME in params:
        when = parse_datetime(params[DATETIME])
        common.system_cmd(["date", "-s", when.strftime("%Y-%m-%d %H:%M:%S")])
    if DATETIME in params or utc is not None:
        set_hardware_clock(clock_mode)
    if ntp is not None and sync is not None:
        platform.set_service(state, sync.service, ntp, reconfigured=reconfigured)
    elif sync is not None and reconfigured:
        platform.service_control().restart(sync.service)
    state.mark_applied(digest)
    return None


def set_hardware_clock(mode: str) -> None:
    """``hwclock --systohc``, where the guest has a hardware clock. Xen PV guests and
    containers have none (nor may a container set it): :func:`common.system_cmd` notes
    that failure as a warning on stderr, with hwclock's own reason, and the module goes
    on; the system clock and NTP are what the guest keeps time by. A guest that has a
    clock and fails to set it fails the module (``templateconfig.environment``)."""
    common.system_cmd(["hwclock", "--systohc", mode])


@SPEC.target("cleanup")
def cleanup(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    state = ModuleState("datetime")
    if not state.has_saved:
        log.info("datetime: nothing to undo")
    state.restore(detect().service_control())
    return None
