"""The exceptions whose messages are shown to the user as they are (no traceback), and the one
filter every message and log line passes: no URL's query string (a SAS token's `sig=`) is shown."""

import re

_QUERY = re.compile(r"(?P<url>\bhttps?://[^\s?#'\"<>]+)\?[^\s'\"<>]*")
_SIGNATURE = re.compile(r"\b(sig|se|skoid|sktid|skt|ske|sks|skv|st|sv|sp|sr|spr)=[^&\s'\"<>]+")


def redact(text: str) -> str:
    """`text` with every URL's query string dropped (SAS tokens travel there) and any stray SAS
    signature field masked."""
    return _SIGNATURE.sub(r"\1=<redacted>", _QUERY.sub(r"\g<url>?<redacted>", text))


class StageError(Exception):
    """Bad input or an impossible setting; the message names the file and line, or the params key."""


class ParamsError(ValueError):
    """params.yaml is unreadable or invalid; the message names the file and the keys."""
