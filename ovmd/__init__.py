"""ovmd: the guest side of Oracle VM's host-to-guest message channel on XenStore."""
#: The one version string of the project (both packages, the packaging, the man pages).
__version__ = "0.1.0"
