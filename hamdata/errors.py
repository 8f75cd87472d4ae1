"""The one exception type for user mistakes.

Anything raised as ``HamdataError`` is printed by the CLI as a single line
(``error: <message>``) with a non-zero exit and no traceback. Everything else
is a bug and keeps its traceback.
"""


class HamdataError(Exception):
    """A problem with the user's input, options or environment."""
