"""Static API keys for tools that can only hold one (`API_KEYS_FILE` or `API_KEYS_ARN`).

The mapping's keys are SHA-256 hex digests of the API keys, never the keys themselves,
so a leaked file or secret signs nobody in; its values are the user ids the keys act
as. Make a digest with `printf %s "$KEY" | sha256sum`. The file is re-read when it
changes; the secret once per container, on first use (boto3 is imported then).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from roleplay.core.errors import NotConfigured, ServiceUnavailable
from roleplay.core.settings import Settings

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_keys_enabled(settings: Settings) -> bool:
    return settings.api_keys_file is not None or settings.api_keys_arn is not None


def user_for_key(api_key: str, settings: Settings) -> str | None:
    """The user id this key signs in as, or None if it is not one of ours."""
    mapping = _mapping(settings)
    return mapping.get(digest(api_key)) if mapping else None


def _mapping(settings: Settings) -> dict[str, str]:
    mapping: dict[str, str] = {}
    if settings.api_keys_file is not None:
        file = Path(settings.api_keys_file)
        try:
            stamp = file.stat().st_mtime_ns
        except OSError as error:
            raise NotConfigured(f"API_KEYS_FILE {str(file)!r} is unreadable: {error}") from None
        mapping.update(_from_file(str(file), stamp))
    if settings.api_keys_arn is not None:
        mapping.update(_from_secret(settings.api_keys_arn))
    return mapping


def parse(text: str, source: str, *, yaml_allowed: bool) -> dict[str, str]:
    """`{sha256 hex: user id}` from JSON (or YAML); a bad entry makes the whole source
    unusable rather than silently dropping someone's key."""
    try:
        raw = _loaded(text, yaml_allowed)
    except ValueError as error:
        raise NotConfigured(f"{source} is not valid: {error}") from None
    if not isinstance(raw, dict):
        raise NotConfigured(f"{source} must be an object of sha256 hex digest to user id")
    mapping: dict[str, str] = {}
    for position, (key, user) in enumerate(raw.items(), start=1):
        hexdigest = str(key).lower().removeprefix("sha256:")
        if not _DIGEST.match(hexdigest) or not isinstance(user, str) or not user.strip():
            raise NotConfigured(f"{source}: each entry must be \"<sha256 hex of the key>\": "
                                f"\"<user id>\" (entry {position} is not; not echoed: it may be a key)")
        mapping[hexdigest] = user.strip()
    return mapping


def _loaded(text: str, yaml_allowed: bool) -> object:
    if not yaml_allowed:
        return json.loads(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(str(error)) from None


@lru_cache(maxsize=4)
def _from_file(path: str, _stamp: int) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise NotConfigured(f"API_KEYS_FILE {path!r} is unreadable: {error}") from None
    return parse(text, f"API_KEYS_FILE {path!r}",
                 yaml_allowed=Path(path).suffix.lower() in {".yaml", ".yml"})


@lru_cache(maxsize=4)
def _from_secret(arn: str) -> dict[str, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if ":ssm:" in arn:
            name = arn.split(":parameter", 1)[1]
            value = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)[
                "Parameter"]["Value"]
        else:
            value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    except (BotoCoreError, ClientError, KeyError, IndexError) as error:
        raise ServiceUnavailable(f"the API keys could not be read from {arn}: {error}",
                                 code="auth_unavailable") from None
    return parse(str(value), f"API_KEYS_ARN {arn}", yaml_allowed=False)
