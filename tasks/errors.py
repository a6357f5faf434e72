"""The one exception type whose message is shown to the user as is (no traceback)."""


class StageError(Exception):
    """Bad input or an impossible setting; the message names the file and line, or the params key."""
