"""URLs with their credentials taken out, for anything a person may read (health, errors).

Userinfo (`user:pass@`) and query parameters that name a secret (`password=`, `token=`,
`key=`, `api_key=`, `secret=`, ...) become `***`; the rest of the URL stays, so an admin
can still tell which host is meant.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAMETER = re.compile(r"pass|pwd|token|key|secret|auth|signature|credential", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """The URL with userinfo and secret query values masked; text that is no URL unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or "://" not in url:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = any(_SECRET_PARAMETER.search(name) for name, _ in pairs)
    if netloc == parts.netloc and not secret:
        return url
    query = urlencode([(name, MASK if _SECRET_PARAMETER.search(name) else value)
                       for name, value in pairs], safe="*") if secret else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_urls_in(text: str) -> str:
    """Every URL inside a free text (an error message) redacted."""
    return _URL_IN_TEXT.sub(lambda found: redact_url(found.group(0)), text)
