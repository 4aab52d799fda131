"""ovmd: the guest side of Oracle VM's host-to-guest message channel on XenStore."""
__version__ = "0.1.0"
