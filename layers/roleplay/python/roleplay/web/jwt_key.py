"""The login's HS256 key: `JWT_SECRET` itself, or fetched from AWS by `JWT_SECRET_ARN`.

A deployed stack never holds the key in plain text: its template passes the ARN of a
Secrets Manager secret or of an SSM SecureString parameter, read once per container
on first use (boto3 is imported then, not at cold start). A key that cannot be read
is a 503: without it no token can be checked, and nobody is let in unchecked.
"""

from __future__ import annotations

from functools import lru_cache

from roleplay.core.errors import ServiceUnavailable
from roleplay.core.settings import Settings


def auth_enabled(settings: Settings) -> bool:
    return settings.jwt_secret is not None or settings.jwt_secret_arn is not None


def jwt_key(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    assert settings.jwt_secret_arn is not None
    return _fetched(settings.jwt_secret_arn)


@lru_cache(maxsize=4)
def _fetched(arn: str) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if ":ssm:" in arn:
            name = arn.split(":parameter", 1)[1]
            answer = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)
            value = answer["Parameter"]["Value"]
        else:
            value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    except (BotoCoreError, ClientError, KeyError, IndexError) as error:
        raise ServiceUnavailable(f"the sign-in key could not be read from {arn}: {error}",
                                 code="auth_unavailable") from None
    if not value.strip():
        raise ServiceUnavailable(f"the sign-in key at {arn} is empty", code="auth_unavailable")
    return str(value)
