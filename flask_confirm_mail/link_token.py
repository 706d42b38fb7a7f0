"""The link token: the JWT in a confirmation link.

Claims: ``sub`` (the user's id), ``email`` (the address the link was mailed to),
``aud`` (``flask-confirm-mail:link``, so no other token of the app is accepted),
``iat``, ``exp`` and a random ``jti``. Header ``typ`` is ``cm-link+jwt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .clock import timestamp
from .errors import InvalidToken
from .token_codec import decode_token, encode_token, new_jti

LINK_TOKEN_TYPE = "cm-link+jwt"
LINK_AUDIENCE = "flask-confirm-mail:link"


@dataclass(frozen=True)
class LinkClaims:
    """What a verified link token says."""

    user_id: str
    email: str
    issued_at: int
    expires_at: int
    jti: str


class LinkTokenSigner:
    """Issues and verifies link tokens with the current key and any previous ones.

    :param secret: the key that signs new tokens.
    :param previous: keys that still verify (rotation), tried after ``secret``.
    :param lifetime: how long a new token works.
    :param leeway: clock skew allowed when verifying, in seconds.
    """

    def __init__(
        self,
        secret: bytes,
        previous: Sequence[bytes] = (),
        *,
        lifetime: timedelta,
        leeway: int = 0,
    ) -> None:
        self._keys = (secret, *previous)
        self.lifetime = lifetime
        self.leeway = leeway

    def issue(self, user_id: str, email: str) -> tuple[str, datetime]:
        """Return a new token for ``user_id`` and ``email`` and when it expires (naive UTC)."""
        now = timestamp()
        exp = now + int(self.lifetime.total_seconds())
        claims = {
            "sub": user_id,
            "email": email,
            "aud": LINK_AUDIENCE,
            "iat": now,
            "exp": exp,
            "jti": new_jti(),
        }
        token = encode_token(claims, self._keys[0], typ=LINK_TOKEN_TYPE)
        return token, datetime.fromtimestamp(exp, timezone.utc).replace(tzinfo=None)

    def verify(self, token: object) -> LinkClaims:
        """Check ``token`` and return its claims.

        :raises ~flask_confirm_mail.errors.ExpiredToken: genuine but too old.
        :raises ~flask_confirm_mail.errors.InvalidToken: anything else.
        """
        claims = decode_token(
            token,
            self._keys,
            typ=LINK_TOKEN_TYPE,
            audience=LINK_AUDIENCE,
            required=("sub", "email"),
            max_lifetime=int(self.lifetime.total_seconds()),
            leeway=self.leeway,
        )
        user_id, email = claims["sub"], claims["email"]
        if not isinstance(user_id, str) or not 0 < len(user_id) <= 64:
            raise InvalidToken("The token's subject is not valid.", reason="bad_claims")
        if not isinstance(email, str) or not 0 < len(email) <= 254:
            raise InvalidToken("The token's address is not valid.", reason="bad_claims")
        return LinkClaims(user_id, email, claims["iat"], claims["exp"], claims["jti"])
