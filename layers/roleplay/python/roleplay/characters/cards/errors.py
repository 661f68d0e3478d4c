"""Why a card file was refused: one 4xx each, with a stable code."""

from __future__ import annotations

from roleplay.core.errors import ApiError, BadRequest, PayloadTooLarge


class UnsupportedCardMedia(ApiError):
    status_code = 415
    code = "unsupported_card_type"


def invalid_card(message: str, code: str = "invalid_card") -> BadRequest:
    return BadRequest(message, code=code)


def card_too_large(limit: int, what: str = "card file") -> PayloadTooLarge:
    return PayloadTooLarge(f"the {what} is larger than CARD_MAX_BYTES={limit} bytes",
                           code="card_too_large")
