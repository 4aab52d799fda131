"""What the standard modules share, kept apart from the eight module files.

``spec``        :class:`~templateconfig.modules.support.spec.ModuleSpec` and ``Key``: a
                module's name, targets, priorities and keys, declared once.
``validators``  checks of single values (booleans, numbers, addresses, host names).
``state``       what a module applied (so a later boot does not re-apply it) and the
                originals it changed (so cleanup can put them back).
``accounts``    the guest's users and groups, read from its files and changed with its
                shadow tools.

Importing this package imports none of them: each module imports what it uses.
"""
