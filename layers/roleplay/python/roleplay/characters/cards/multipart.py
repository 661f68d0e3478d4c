"""One file out of a `multipart/form-data` body, read in bounded time.

An upload holds a field or two; a body may still be cut into tens of thousands of
empty parts, and a general MIME parser (the standard library's `email`) spends
seconds of pure Python on them. Here the parts are counted first with one `bytes.count`
(C speed), more than `MULTIPART_MAX_PARTS` is refused before any is read, and the rest
is a handful of `find`s. Only what form uploads use is read: a part's
`Content-Disposition` name and its `Content-Type`; a `Content-Transfer-Encoding`
(RFC 7578 deprecates it) is decoded when it is base64 or quoted-printable.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from roleplay.core.errors import BadRequest, PayloadTooLarge

MAX_HEADER_BYTES = 16 * 1024
"""Of one part's header block: a name, a filename and a type need far less."""
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^";,\s]{1,70}))', re.IGNORECASE)
_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
_ESCAPED = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Part:
    name: str | None
    media: str
    """Its `Content-Type` without parameters, lowercased (`text/plain` when absent)."""
    data: bytes


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_multipart")


def boundary_of(content_type: str) -> bytes:
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise _invalid("the multipart body has no boundary in its Content-Type (1 to 70 characters)")
    return (found.group(1) or found.group(2)).encode("latin-1", "replace")


def _param(header: str, name: str) -> str | None:
    for match in _PARAM.finditer(header):
        if match.group(1).lower() == name:
            quoted = match.group(2)
            return _ESCAPED.sub(r"\1", quoted) if quoted is not None else match.group(3).strip()
    return None


def _part(raw: bytes) -> Part:
    head, sep, data = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, data = raw.partition(b"\n\n")
    if not sep:
        if raw.strip():
            raise _invalid("a multipart part has no blank line after its headers")
        head, data = b"", b""
    if len(head) > MAX_HEADER_BYTES:
        raise _invalid(f"a multipart part's headers are over {MAX_HEADER_BYTES} bytes")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").splitlines():
        key, colon, value = line.partition(":")
        if colon:
            headers.setdefault(key.strip().lower(), value.strip())
    disposition = headers.get("content-disposition", "")
    media = headers.get("content-type", "text/plain").split(";", 1)[0].strip().lower()
    return Part(name=_param(disposition, "name"), media=media or "text/plain",
                data=_decoded(data, headers.get("content-transfer-encoding", "").lower()))


def _decoded(data: bytes, encoding: str) -> bytes:
    try:
        if encoding == "base64":
            return binascii.a2b_base64(data)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        raise _invalid(f"a multipart part is not valid {encoding}") from None
    return data


def parts(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Every part of `body`, in order; more than `max_parts` is a 413 before any is read."""
    delimiter = b"--" + boundary_of(content_type)
    if body.count(delimiter) > max_parts + 1:  # each part opens with one, the end adds one
        raise PayloadTooLarge(f"the multipart body has more than {max_parts} parts "
                              "(MULTIPART_MAX_PARTS)", code="too_many_parts")
    start = 0 if body.startswith(delimiter) else body.find(b"\n" + delimiter) + 1
    if start == 0 and not body.startswith(delimiter):  # find answered -1: no delimiter at all
        raise _invalid("the multipart body has no parts (is its boundary right?)")
    found: list[Part] = []
    position = start + len(delimiter)
    while not body.startswith(b"--", position):
        line_end = body.find(b"\n", position)
        if line_end < 0:
            raise _invalid("the multipart body ends inside a delimiter line")
        following = body.find(b"\n" + delimiter, line_end)
        if following < 0:
            raise _invalid("the multipart body has no closing delimiter")
        content = body[line_end + 1:following]
        found.append(_part(content.removesuffix(b"\r")))
        position = following + 1 + len(delimiter)
    return found


def form_file(body: bytes, content_type: str, field: str, max_parts: int) -> tuple[bytes, str]:
    """The bytes and media type of the first part named `field`."""
    for part in parts(body, content_type, max_parts):
        if part.name == field:
            return part.data, part.media
    raise BadRequest(f"the multipart body has no field named {field}", code="missing_file")
