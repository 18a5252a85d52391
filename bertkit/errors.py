"""The one exception type users see: the CLI prints its message on one line, with no traceback."""


class BertkitError(Exception):
    """A problem with the user's input (files, flags, model directories), explained in one line."""
