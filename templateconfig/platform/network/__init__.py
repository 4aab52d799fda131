"""The network stacks a guest may use, one renderer per format (as cloud-init's ``net/``).

``interface.py``  :class:`Interface`, a validated interface, and :class:`NetworkStack`,
                  what every renderer offers (``write`` its files, ``activate`` them)
``ifcfg.py``      initscripts' ``ifcfg-<dev>`` (EL5-8)
``keyfile.py``    NetworkManager keyfiles (EL9+, and NetworkManager-only guests)
``ifupdown.py``   Debian's ``/etc/network/interfaces.d``
``netplan.py``    Ubuntu's netplan
``resolvconf.py`` ``/etc/resolv.conf`` itself, where nothing manages it (ifupdown alone)

A platform picks one stack (``GuestPlatform.network_stack()`` in ``rhel.py`` and
``debian.py``: which stacks a family may have, and in which order they are tried, is a
distro decision); the network module hands it validated :class:`Interface` records and
never asks which stack it is. Every stack writes only files we own (``ifcfg-<dev>`` on
EL, which the template owns anyway, our ``ovm-<dev>`` keyfile or ``interfaces.d``
snippet, ``90-ovm.yaml``, the ``ovm-dns`` dhclient hook) and, where it must, a shared
file (``/etc/network/interfaces``, ``/etc/resolv.conf``), so the originals can be saved
for cleanup.
"""
from __future__ import annotations

from templateconfig.platform.network.ifcfg import IfcfgStack
from templateconfig.platform.network.ifupdown import IfupdownStack
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack
from templateconfig.platform.network.keyfile import KeyfileStack
from templateconfig.platform.network.netplan import NetplanStack
from templateconfig.platform.network.resolvconf import ResolvConf

__all__ = ["HEADER", "Interface", "NetworkStack", "IfcfgStack", "KeyfileStack",
           "IfupdownStack", "NetplanStack", "ResolvConf"]
