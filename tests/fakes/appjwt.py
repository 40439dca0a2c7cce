"""GitHub App JWT verification for the fake GitHub, with `cryptography` (no JWT library).

`app_jwt_problem` says why GitHub would refuse a JWT presented to
`POST /app/installations/{id}/access_tokens` — not RS256, bad signature, `exp` missing, past
or more than 10 minutes ahead, `iat` in the future, `iss` not the app id — using GitHub's
messages, or returns None when it would be accepted. It does not issue tokens.
"""

from __future__ import annotations

import base64
import json
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_MAX_LIFETIME = 600  # GitHub: exp no more than 10 minutes into the future
CLOCK_SKEW = 60
UNDECODABLE = "A JSON web token could not be decoded"


def app_public_key(private_key_pem: bytes | str) -> rsa.RSAPublicKey:
    """The public half of a GitHub App's PEM private key (which must be RSA)."""
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("a GitHub App key is an RSA key")
    return key.public_key()


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def app_jwt_problem(jwt: str, *, key: rsa.RSAPublicKey, app_id: int | str) -> str | None:
    """Why GitHub would refuse this app JWT, or None if it is acceptable."""
    parts = jwt.split(".")
    if len(parts) != 3:
        return UNDECODABLE
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except ValueError:
        return UNDECODABLE
    if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
        return UNDECODABLE
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return UNDECODABLE
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return "'Expiration time' claim ('exp') must be a numeric value representing the future time"
    if exp <= now:
        return "'Expiration time' claim ('exp') is expired"
    if exp - now > JWT_MAX_LIFETIME:
        return "'Expiration time' claim ('exp') is too far in the future"
    if iat is not None and (not isinstance(iat, int | float) or iat > now + CLOCK_SKEW):
        return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
    if str(claims.get("iss")) != str(app_id):
        return "'Issuer' claim ('iss') must be the GitHub App's id"
    return None
