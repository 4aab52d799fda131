"""The root of the framework's exceptions (kept import-free: CLIs load it on fast paths).

Every error the framework reports to a user derives from :class:`TemplateConfigError`,
so a command can catch one type and print its message, which names the file, key or
value that was wrong and what to do.
"""


class TemplateConfigError(Exception):
    """Base of the errors the template-configuration framework reports to the user."""

    #: Whether a module that fails with this error prints its traceback before the
    #: one-line reason: where a failed command was run helps; a refused path or value
    #: says all in its message.
    shows_traceback = False
