"""templateconfig: Oracle VM's template configuration framework and its module API."""
__version__ = "0.1.0"
