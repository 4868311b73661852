"""The one exception type users see.

Anything the user can fix (a bad file, option, recipe key or checkpoint) raises
:class:`TextVAEError` with a message that names the file, line or option. The CLI
prints it as a single line and exits with status 2 instead of showing a traceback.
"""


class TextVAEError(Exception):
    """A user-facing error: printed as one line by the CLI, exit status 2."""
