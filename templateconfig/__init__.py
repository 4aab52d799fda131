"""templateconfig: Oracle VM's template configuration framework and its module API."""
from ovmd import __version__

__all__ = ["__version__"]
