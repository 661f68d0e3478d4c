"""`python -m local_runner token --sub alice`: a login token for trying signed-in mode.

It is what the app's login would issue: HS256 with the configured key (`JWT_SECRET`, or
`JWT_SECRET_ARN`'s secret), `sub`, `iat`, `exp`, and `aud`/`iss` when those are set.
"""

from __future__ import annotations

import argparse
import sys
import time

from roleplay.core.settings import ConfigurationError, get_settings
from roleplay.web.auth import ALGORITHM
from roleplay.web.jwt_key import auth_enabled, jwt_key

DEFAULT_TTL_S = 3600


def issue_token(subject: str, ttl_s: int = DEFAULT_TTL_S) -> str:
    import jwt

    settings = get_settings()
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl_s}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, jwt_key(settings), algorithm=ALGORITHM)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_runner token",
                                     description="Print a login token (JWT) for the configured key.")
    parser.add_argument("--sub", required=True, help="the user id the token is for")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help="seconds until it expires")
    args = parser.parse_args(argv)
    if not args.sub.strip() or args.ttl <= 0:
        parser.error("--sub must not be blank and --ttl must be positive")
    try:
        if not auth_enabled(get_settings()):
            print("JWT_SECRET is not set: sign-in is off and every caller is anonymous; set it "
                  "to the same value for the server and this command", file=sys.stderr)
            return 2
        print(issue_token(args.sub, args.ttl))
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    return 0
