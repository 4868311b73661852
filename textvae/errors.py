"""The exceptions users see.

Anything the user can fix (a bad file, option, recipe key or checkpoint) raises
:class:`TextVAEError` with a message that names the file, line or option. The CLI
prints it as a single line and exits with status 2 instead of showing a traceback.

Library code words its messages in library terms (a parameter name, a recipe key), never
in command-line flags: a bad value of a named parameter raises :class:`InvalidArgument`,
which the CLI rewords as the flag that set it.
"""


class TextVAEError(Exception):
    """A user-facing error: printed as one line by the CLI, exit status 2."""


class RetiredOptionWarning(UserWarning):
    """An option of a retired design, found at the value under which it changed nothing (an earlier
    version's resolved recipe or export records every option): ignored. The CLI prints it as one line."""


class InvalidArgument(TextVAEError):
    """A bad value for the parameter ``name`` of a library call (``max_length``, ``steps``).

    The message reads ``name: problem``; the CLI shows ``--name: problem`` when the value
    came from that command's own ``--name`` flag.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


def require_extra(package: str, extra: str, needed_for: str) -> None:
    """Raise a :class:`TextVAEError` saying what to install when ``package`` (an optional
    dependency, textvae's extra ``extra``) cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise TextVAEError(f"{needed_for} needs the {package} package: pip install 'textvae[{extra}]' "
                           f"(or pip install {package})")
