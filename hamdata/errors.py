"""The one exception type for user mistakes.

Anything raised as ``HamdataError`` is printed by the CLI as a single line
(``error: <message>``) with a non-zero exit and no traceback. Everything else
is a bug and keeps its traceback.
"""


import errno
import functools
import sys


class HamdataError(Exception):
    """A problem with the user's input, options or environment.

    Raised in a PyTorch DataLoader worker, it comes back to the main process rebuilt from a message of many lines
    ("Caught HamdataError in DataLoader worker process 0. Original Traceback ... HamdataError: MESSAGE"); it keeps
    only MESSAGE, so that it is still one line for the user.
    """

    def __init__(self, message="", *args):
        if isinstance(message, str) and message.startswith("Caught ") and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message, *args)


# The OS errors that are the user's environment (a full disk, a read-only folder), in words
REASONS = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
           errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded",
           errno.EFBIG: "file too large for this file system or the file size limit (ulimit -f)",
           errno.EPERM: "operation not permitted"}


def os_error_reason(exc: OSError) -> str:
    return REASONS.get(exc.errno, exc.strerror or str(exc))


def os_error_message(exc: OSError, path) -> str:
    """One line for an OSError that is the user's environment, not a bug."""
    return f"cannot write {exc.filename or path}: {os_error_reason(exc)}"


def exit_on_user_error(interrupted: str):
    """Decorator for CLI commands: a HamdataError becomes ``error: ...`` on stderr and exit 2;
    Ctrl-C prints ``interrupted`` and exits 130. Other exceptions keep their traceback (bugs)."""
    import click

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except HamdataError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo(interrupted, err=True)
                sys.exit(130)

        return wrapper

    return decorate
