"""The standard template-configuration modules, one file each.

Each module declares a :class:`templateconfig.modules.base.ModuleSpec` (name, targets
with priorities, keys with flags and validators) and its target handlers; the script in
``template.d/scripts/<name>`` only calls ``SPEC.main()``.
"""
