"""Signed tokens: strict HS256 JWTs on PyJWT (RFC 8725: the algorithm pinned, a ``typ`` and
an audience per kind, required claims typed, the lifetime bounded, oversized input refused
before any decoding), the link token, and the confirmation code."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt

from .errors import ExpiredToken, InvalidToken

ALGORITHM = "HS256"
#: Shorter secrets are refused at start-up (RFC 7518 3.2: at least the hash size).
MIN_SECRET_BYTES = 32
MAX_TOKEN_LENGTH = 4096
#: The largest clock leeway, in seconds.
MAX_LEEWAY = 300

LINK_TOKEN_TYPE = "cm-link+jwt"
#: The link token's ``aud``, so that no other token of the app is accepted as one.
LINK_AUDIENCE = "flask-confirm-mail:link"
#: The ``aud`` of a change notice's cancel link: it confirms nothing, and no link cancels.
CANCEL_AUDIENCE = "flask-confirm-mail:cancel"

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_STRING_CLAIM = 2048

MAX_CODE_LENGTH = 32
#: ASCII letters and digits: a code reads aloud, types on any keyboard and needs no escaping.
CODE_CHARACTERS = re.compile(r"[A-Za-z0-9]+")
#: Separators a reader may type inside a code ("123 456", "ABC-DEF"); they are dropped.
_CODE_SEPARATORS = re.compile(r"[\s-]+")


def new_jti() -> str:
    return secrets.token_urlsafe(16)


def secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def encode_token(claims: Mapping[str, Any], secret: bytes, *, typ: str) -> str:
    return jwt.encode(dict(claims), secret, algorithm=ALGORITHM, headers={"typ": typ})


def read_header(token: object, allowed_types: Sequence[str | None]) -> None:
    """Refuse ``token`` unless it is a compact HS256 JWT of one of ``allowed_types``."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidToken("The token is malformed.", reason="malformed")
    if _TOKEN_SHAPE.fullmatch(token) is None:
        raise InvalidToken("The token is malformed.", reason="malformed")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, RecursionError):  # PyJWT < 2.14 lets RecursionError out
        raise InvalidToken("The token is malformed.", reason="malformed") from None
    if header.get("alg") != ALGORITHM or header.get("typ") not in allowed_types:
        raise InvalidToken("The token is not of this kind.", reason="wrong_kind")


def verify_signature(
    token: str, keys: Sequence[bytes], *, audience: str | None, require: Sequence[str],
    leeway: int,
) -> dict[str, Any]:  # fmt: skip
    """``jwt.decode`` with each of ``keys`` in turn; ``audience=None`` refuses any ``aud``."""
    leeway = min(max(leeway, 0), MAX_LEEWAY)
    for key in keys:
        try:
            return jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=audience, leeway=leeway,
                options={"require": list(require)},
            )  # fmt: skip
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise ExpiredToken() from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The token is not of this kind.", reason="wrong_kind") from None
        except (jwt.PyJWTError, TypeError, OverflowError, RecursionError):  # PyJWT < 2.15
            raise InvalidToken("The token's claims are not valid.", reason="bad_claims") from None
    raise InvalidToken("The token's signature is not valid.", reason="bad_signature")


def decode_token(
    token: object, keys: Sequence[bytes], *, typ: str, audience: str, required: Sequence[str],
    max_lifetime: int, leeway: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The claims of ``token``, verified with ``keys`` (the current one first): ``required``
    besides ``aud``, ``iat``, ``exp`` and ``jti``, ``exp - iat`` at most ``max_lifetime``.
    Raises :class:`ExpiredToken` for a genuine token past ``exp``, else :class:`InvalidToken`."""
    read_header(token, (typ,))
    assert isinstance(token, str)
    claims = verify_signature(
        token, keys, audience=audience, require=("aud", "iat", "exp", "jti", *required),
        leeway=leeway,
    )  # fmt: skip
    iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
    if not (is_int(iat) and is_int(exp)) or not 0 < exp - iat <= max_lifetime:
        raise InvalidToken("The token's lifetime is not valid.", reason="bad_claims")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise InvalidToken("The token's id is not valid.", reason="bad_claims")
    if any(isinstance(claims[n], str) and len(claims[n]) > _MAX_STRING_CLAIM for n in required):
        raise InvalidToken("The token's claims are not valid.", reason="bad_claims")
    return claims


@dataclass(frozen=True)
class LinkClaims:
    user_id: str
    email: str


class LinkTokenSigner:
    """Issues link tokens with ``secret``, verifies them with it or any of ``previous`` (key
    rotation). Claims: ``sub`` (user id), ``email`` (the address mailed), aud, iat, exp, jti."""

    def __init__(
        self, secret: bytes, previous: Sequence[bytes] = (), *, lifetime: timedelta,
        leeway: int = 0,
    ) -> None:  # fmt: skip
        self._keys = (secret, *previous)
        self.lifetime = lifetime
        self.leeway = leeway

    def issue(
        self, user_id: str, email: str, expires_at: datetime | None = None, seed: str = "",
        cancel: bool = False,
    ) -> str:  # fmt: skip
        """A token for ``user_id`` and ``email`` that works until ``expires_at`` (naive UTC;
        default: the lifetime from now); the same ``seed`` and expiry give the same token.
        With ``cancel``, a change notice's cancel link (``CANCEL_AUDIENCE``)."""
        exp = int(time.time() + self.lifetime.total_seconds())
        if expires_at is not None:
            exp = int(expires_at.replace(tzinfo=timezone.utc).timestamp())
        iat = exp - int(self.lifetime.total_seconds())
        jti = hashlib.sha256(seed.encode()).hexdigest()[:32] if seed else new_jti()
        aud = CANCEL_AUDIENCE if cancel else LINK_AUDIENCE
        claims = {"sub": user_id, "email": email, "aud": aud, "iat": iat, "exp": exp}
        return encode_token({**claims, "jti": jti}, self._keys[0], typ=LINK_TOKEN_TYPE)

    def verify(self, token: object, cancel: bool = False) -> LinkClaims:
        """The claims of ``token`` (a cancel link if ``cancel``); raises as :func:`decode_token`."""
        claims = decode_token(
            token, self._keys, typ=LINK_TOKEN_TYPE, leeway=self.leeway,
            audience=CANCEL_AUDIENCE if cancel else LINK_AUDIENCE, required=("sub", "email"),
            max_lifetime=int(self.lifetime.total_seconds()),
        )  # fmt: skip
        user_id, email = claims["sub"], claims["email"]
        if not isinstance(user_id, str) or not 0 < len(user_id) <= 64:
            raise InvalidToken("The token's subject is not valid.", reason="bad_claims")
        if not isinstance(email, str) or not 0 < len(email) <= 254:
            raise InvalidToken("The token's address is not valid.", reason="bad_claims")
        return LinkClaims(user_id, email)


class CodeHasher:
    """Short confirmation codes, one per outbox row: an HMAC of the row's id and recipient under
    a key derived from the link secret for this purpose alone. Every delivery of a row carries
    the same code, nothing of it is stored, and a code works for its row only. ``previous``
    keys still match."""

    def __init__(
        self, secret: bytes, previous: Sequence[bytes] = (), *, length: int, alphabet: str
    ) -> None:
        label = b"flask-confirm-mail confirmation code v2"
        self._keys = tuple(hmac.new(k, label, hashlib.sha256).digest() for k in (secret, *previous))
        self.length = length
        self.alphabet = alphabet
        # An alphabet of one letter case accepts the code typed in the other case.
        self._fold = str.upper if alphabet.isupper() else str.lower if alphabet.islower() else str

    def code_for(self, outbox_id: int, recipient: str, *, key: int = 0) -> str:
        """The code of one outbox row's email: ``length`` characters of ``alphabet``."""
        mac = hmac.new(self._keys[key], f"{outbox_id}\n{recipient.lower()}".encode(), "sha256")
        number, characters = int.from_bytes(mac.digest(), "big"), []
        for _ in range(self.length):
            number, index = divmod(number, len(self.alphabet))
            characters.append(self.alphabet[index])
        return "".join(characters)

    def matches(self, typed: object, outbox_id: int, recipient: str) -> bool:
        """Whether ``typed`` (separators dropped, its case folded if ``alphabet`` has one case)
        is the code of that row, compared in constant time under every key."""
        code = None
        if isinstance(typed, str) and len(typed) <= 4 * MAX_CODE_LENGTH:
            code = self._fold(_CODE_SEPARATORS.sub("", typed))
            if len(code) != self.length or any(c not in self.alphabet for c in code):
                code = None  # compare_digest raises on non-ASCII text: a 500, not a 400
        found = False
        for key in range(len(self._keys)):
            found |= hmac.compare_digest(self.code_for(outbox_id, recipient, key=key), code or "")
        return found
