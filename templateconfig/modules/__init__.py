"""The standard template-configuration modules, one file each.

Each module declares a :class:`templateconfig.modules.support.spec.ModuleSpec` (name,
targets with priorities, keys with flags and validators) and its target handlers; the
script in ``template.d/scripts/<name>`` only calls ``SPEC.main()``. The code the modules
share lives in :mod:`templateconfig.modules.support`; distro differences are asked of
:mod:`templateconfig.platform`.
"""
