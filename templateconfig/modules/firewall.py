"""firewall: switch the guest's firewall on or off (Oracle's ``firewall`` module, priority 41).

What "the firewall" is depends on the guest (``Platform.firewall_services()``): the
``iptables``/``ip6tables`` services on EL5/6, ``firewalld`` on EL7+, ufw or nftables on
Debian/Ubuntu. It is enabled and started, or disabled and stopped; the persistent change
is made only when the service is not already in that state.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

from templateconfig.modules.support import validators
from templateconfig.modules.support.spec import Key, ModuleSpec
from templateconfig.platform import detect

log = logging.getLogger(__name__)

FIREWALL = "com.oracle.linux.network.firewall"

SPEC = ModuleSpec(
    "firewall", {"configure": 41}, "Enable or disable the firewall.",
    keys=[Key(FIREWALL, "Enable the firewall: True or False.", hidden=True,
              validate=validators.boolean)])


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    value = params.get(FIREWALL)
    if value is None:
        return None
    enabled = validators.is_true(value)
    platform = detect()
    services = platform.set_firewall(enabled)
    if not services:
        log.warning("firewall: no firewall (firewalld, iptables, ufw, nftables) is installed on "
                    "%s: %s=%s ignored", platform.release.pretty_name, FIREWALL, value)
    else:
        log.info("firewall: %s %s", "enabled" if enabled else "disabled", ", ".join(services))
    return None
