"""The exceptions whose messages are shown to the user as they are (no traceback)."""


class StageError(Exception):
    """Bad input or an impossible setting; the message names the file and line, or the params key."""


class ParamsError(ValueError):
    """params.yaml is unreadable or invalid; the message names the file and the keys."""
