"""Forged link tokens at /confirm: algorithms, signatures, key headers, confusion, bad shapes.

Cases 1-3 and 9-11 of the adversarial list (RFC 8725 sections 2.1, 2.8, 3.1, 3.11, 3.12;
CVE-2015-9235, CVE-2016-10555, CVE-2018-0114, CVE-2022-29217). Each forgery is sent as
the GET page, a form POST and a JSON POST; every answer is a 400 that echoes nothing,
and no row, email or SQL statement follows from it. As every forgery is refused before
the database is touched (asserted), the module runs on SQLite only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flask_confirm_mail.mailer.wire import (
    WRAPPING_AUDIENCE,
    WRAPPING_TOKEN_TYPE,
    issue_legacy_token,
    issue_wrapping_token,
)
from flask_confirm_mail.tokens import LINK_AUDIENCE, LINK_TOKEN_TYPE, MAX_TOKEN_LENGTH
from tests.apps import EXTERNAL_URL, SECRET_KEY
from tests.security.access_audit import AccessAudit
from tests.security.forgery import (
    LINK_HEADER,
    LINK_KEY,
    MISSING,
    b64url,
    b64url_decode,
    flip_signature_byte,
    forge,
    forge_link,
    link_header,
    link_payload,
    segment,
)
from tests.security.outcomes import sqlite_only
from tests.security.victims import Victim

pytestmark = sqlite_only

MAILER_SECRET = b"mailer-secret-for-tests-0123456789abcdef"
Forgery = Callable[[Victim], str]


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_public_pem() -> bytes:
    return (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _payload(v: Victim, **changes: Any) -> dict[str, Any]:
    return link_payload(v.uid, v.email, **changes)


def _hmac_with(digest: Any, alg: str) -> Forgery:
    def build(v: Victim) -> str:
        signing_input = f"{segment(link_header(alg=alg))}.{segment(_payload(v))}"
        signature = hmac.new(LINK_KEY, signing_input.encode(), digest).digest()
        return f"{signing_input}.{b64url(signature)}"

    return build


def _asymmetric(alg: str) -> Forgery:
    def build(v: Victim) -> str:
        key = ec_key() if alg.startswith("ES") else rsa_key()
        return jwt.encode(_payload(v), key, algorithm=alg, headers={"typ": LINK_TOKEN_TYPE})

    return build


def _genuine(v: Victim) -> str:
    return forge_link(v.uid, v.email)


# --- 1. alg "none" and empty signatures ----------------------------------------------------------

NONE_ALGORITHMS: dict[str, Forgery] = {
    "alg none, no signature": lambda v: forge(link_header(alg="none"), _payload(v)),
    "alg None": lambda v: forge(link_header(alg="None"), _payload(v)),
    "alg NONE": lambda v: forge(link_header(alg="NONE"), _payload(v)),
    "alg nOnE": lambda v: forge(link_header(alg="nOnE"), _payload(v)),
    "alg none, real signature kept": lambda v: forge(
        link_header(alg="none"), _payload(v), LINK_KEY
    ),
    "alg missing": lambda v: forge(link_header(alg=MISSING), _payload(v), LINK_KEY),
    "alg null": lambda v: forge(link_header(alg=None), _payload(v), LINK_KEY),
    "alg as a list": lambda v: forge(link_header(alg=["HS256"]), _payload(v), LINK_KEY),
    "HS256 header, empty signature": lambda v: forge(LINK_HEADER, _payload(v)),
    "genuine token, signature stripped": lambda v: _genuine(v).rsplit(".", 1)[0] + ".",
}

# --- 2. other algorithms, and the RSA public key as an HMAC secret -------------------------------

OTHER_ALGORITHMS: dict[str, Forgery] = {
    "HS384 with the real secret": _hmac_with(hashlib.sha384, "HS384"),
    "HS512 with the real secret": _hmac_with(hashlib.sha512, "HS512"),
    "RS256 with an attacker's key": _asymmetric("RS256"),
    "ES256 with an attacker's key": _asymmetric("ES256"),
    "PS256 with an attacker's key": _asymmetric("PS256"),
    "RS256 header, HMAC over the public key": lambda v: forge(
        link_header(alg="RS256"), _payload(v), rsa_public_pem()
    ),
    "HS256 keyed with an RSA public key (PEM)": lambda v: forge(
        LINK_HEADER, _payload(v), rsa_public_pem()
    ),
    "HS256 keyed with an RSA public key (DER)": lambda v: forge(
        LINK_HEADER,
        _payload(v),
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ),
}

# --- 3. tampered signatures and guessable keys ---------------------------------------------------

TAMPERED: dict[str, Forgery] = {
    "first signature byte flipped": lambda v: flip_signature_byte(v.token, 0),
    "last signature byte flipped": lambda v: flip_signature_byte(v.token, -1),
    "signature cut by 4 characters": lambda v: v.token[:-4],
    "signature cut in half": lambda v: v.token[: len(v.token) - 22],
    "signature extended": lambda v: v.token + "AAAA",
    "signature doubled": lambda v: v.token + v.token.rsplit(".", 1)[1],
    "payload swapped, signature kept": lambda v: ".".join(
        (
            v.token.split(".")[0],
            segment(_payload(v, sub=str(v.uid + 1))),
            v.token.split(".")[2],
        )
    ),
    "payload email changed, signature kept": lambda v: ".".join(
        (
            v.token.split(".")[0],
            segment(
                {**json.loads(b64url_decode(v.token.split(".")[1])), "email": "evil@example.com"}
            ),
            v.token.split(".")[2],
        )
    ),
    'signed with ""': lambda v: forge(LINK_HEADER, _payload(v), b""),
    'signed with "secret"': lambda v: forge(LINK_HEADER, _payload(v), b"secret"),
    "signed with SECRET_KEY": lambda v: forge(LINK_HEADER, _payload(v), SECRET_KEY.encode()),
    "signed with the link secret plus a byte": lambda v: forge(
        LINK_HEADER, _payload(v), LINK_KEY + b"x"
    ),
    "signed with the link secret minus a byte": lambda v: forge(
        LINK_HEADER, _payload(v), LINK_KEY[:-1]
    ),
    "signed with the link secret's hex": lambda v: forge(
        LINK_HEADER, _payload(v), LINK_KEY.hex().encode()
    ),
}


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(build, id=name)
        for table in (NONE_ALGORITHMS, OTHER_ALGORITHMS, TAMPERED)
        for name, build in table.items()
    ],
)
def test_forged_signature_or_algorithm_is_refused(victim: Victim, build: Forgery) -> None:
    victim.attack(build(victim))


def test_the_forgery_builder_makes_tokens_the_app_accepts(victim: Victim) -> None:
    """The control: with the real secret and nothing changed, a forged token works."""
    response = victim.app.test_client().post(
        f"/confirm/{forge_link(victim.uid, victim.email)}", headers={"Accept": "application/json"}
    )
    assert response.status_code == 200 and response.json["status"] == "confirmed"


# --- 9. kid, jku, x5u, jwk: never followed -------------------------------------------------------


class KeyServer:
    """A loopback HTTP server offering attacker keys; it records every hit."""

    def __init__(self, documents: dict[str, bytes]) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = documents.get(self.path, b"")
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


ATTACKER_KEY = b"attacker-controlled-hmac-key-0123456789"


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    jwks = {"keys": [{"kty": "oct", "kid": "k1", "k": b64url(ATTACKER_KEY)}]}
    server = KeyServer({"/jwks.json": json.dumps(jwks).encode(), "/cert.pem": rsa_public_pem()})
    yield server
    server.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "attacker.key"
    path.write_bytes(ATTACKER_KEY)
    return path


def _rsa_jwk() -> dict[str, Any]:
    numbers = rsa_key().public_key().public_numbers()

    def to_b64(n: int) -> str:
        return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "n": to_b64(numbers.n), "e": to_b64(numbers.e)}


def _key_headers(server: KeyServer, key_file: Path) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Header additions and the key an attacker would sign with if the header were followed."""
    return {
        "kid: a file the attacker wrote": ({"kid": str(key_file)}, ATTACKER_KEY),
        "kid: path traversal to /dev/null": ({"kid": "../../../../../../dev/null"}, b""),
        "kid: SQL injection": ({"kid": "x' UNION SELECT 'attacker' -- "}, b"attacker"),
        "kid: URL": ({"kid": f"{server.url}/jwks.json"}, ATTACKER_KEY),
        "jku: attacker JWKS": ({"jku": f"{server.url}/jwks.json", "kid": "k1"}, ATTACKER_KEY),
        "x5u: attacker certificate": ({"x5u": f"{server.url}/cert.pem"}, rsa_public_pem()),
        "jwk: embedded oct key": (
            {"jwk": {"kty": "oct", "k": b64url(ATTACKER_KEY)}},
            ATTACKER_KEY,
        ),
        "jwk: embedded RSA key": ({"jwk": _rsa_jwk()}, rsa_public_pem()),
        "x5c: embedded chain": ({"x5c": ["MIIB"]}, ATTACKER_KEY),
    }


KEY_HEADER_CASES = [
    "kid: a file the attacker wrote",
    "kid: path traversal to /dev/null",
    "kid: SQL injection",
    "kid: URL",
    "jku: attacker JWKS",
    "x5u: attacker certificate",
    "jwk: embedded oct key",
    "jwk: embedded RSA key",
    "x5c: embedded chain",
]


def _assert_nothing_fetched(
    audit: AccessAudit, server: KeyServer, key_file: Path, header: dict[str, Any]
) -> None:
    assert server.hits == [], "a key URL from the token was fetched"
    assert audit.connected == [], "the app opened a network connection"
    forbidden = {str(key_file), "/dev/null"}
    if isinstance(header.get("kid"), str):
        forbidden.add(header["kid"])
    assert not forbidden & {str(p) for p in audit.opened}, "a file named by the token was opened"


@pytest.mark.parametrize("case", KEY_HEADER_CASES)
def test_key_location_headers_are_not_followed(
    victim: Victim,
    access_audit: AccessAudit,
    key_server: KeyServer,
    key_file: Path,
    case: str,
) -> None:
    extra, attacker_key = _key_headers(key_server, key_file)[case]
    forged = forge({**LINK_HEADER, **extra}, _payload(victim), attacker_key)
    with access_audit.watch():
        victim.attack(forged)
    _assert_nothing_fetched(access_audit, key_server, key_file, extra)


@pytest.mark.parametrize("case", KEY_HEADER_CASES)
def test_key_location_headers_on_a_genuine_token_are_ignored(
    victim: Victim,
    access_audit: AccessAudit,
    key_server: KeyServer,
    key_file: Path,
    case: str,
) -> None:
    """Signed with the real secret, the token works as if the header were absent."""
    extra, _ = _key_headers(key_server, key_file)[case]
    genuine = forge({**LINK_HEADER, **extra}, _payload(victim), LINK_KEY)
    with access_audit.watch():
        page = victim.app.test_client().get(f"/confirm/{genuine}")
    assert page.status_code == 200 and b"Confirm my email address" in page.data
    _assert_nothing_fetched(access_audit, key_server, key_file, extra)


# --- 10. token confusion -------------------------------------------------------------------------


def _wrapping_token(v: Victim, key: bytes) -> str:
    return issue_wrapping_token(
        key,
        recipient=v.email,
        template="signup",
        link_url=v.link,
        link_token=v.token,
    )


def _session_cookie(v: Victim) -> str:
    client = v.app.test_client()
    assert client.post(f"/login/{v.uid}").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _app_jwt(v: Victim, key: bytes, **header: Any) -> str:
    claims = {"sub": str(v.uid), "email": v.email, "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm="HS256", headers=header or None)


CONFUSION: dict[str, Forgery] = {
    "wrapping token, mailer secret": lambda v: _wrapping_token(v, MAILER_SECRET),
    "wrapping token, link secret": lambda v: _wrapping_token(v, LINK_KEY),
    "wrapping typ and audience with link claims, link secret": lambda v: forge(
        {"alg": "HS256", "typ": WRAPPING_TOKEN_TYPE}, _payload(v, aud=WRAPPING_AUDIENCE), LINK_KEY
    ),
    "link typ, wrapping audience, link secret": lambda v: forge(
        LINK_HEADER, _payload(v, aud=WRAPPING_AUDIENCE), LINK_KEY
    ),
    "link typ, another audience, link secret": lambda v: forge(
        LINK_HEADER, _payload(v, aud="flask-confirm-mail:reset"), LINK_KEY
    ),
    "link typ, audience list without the link's": lambda v: forge(
        LINK_HEADER, _payload(v, aud=["flask-confirm-mail:reset"]), LINK_KEY
    ),
    "wrapping typ, link audience, link secret": lambda v: forge(
        {"alg": "HS256", "typ": WRAPPING_TOKEN_TYPE}, _payload(v), LINK_KEY
    ),
    "typ JWT, link claims, link secret": lambda v: forge(
        {"alg": "HS256", "typ": "JWT"}, _payload(v), LINK_KEY
    ),
    "no typ, link claims, link secret": lambda v: forge({"alg": "HS256"}, _payload(v), LINK_KEY),
    "legacy mailer token, link secret": lambda v: issue_legacy_token(
        LINK_KEY,
        user_email=v.email,
        access_key="1234567890",
        link_prefix=f"{EXTERNAL_URL}/confirm/",
        link_token=v.token,
    ),
    "the original app's link token (aut_id), link secret": lambda v: jwt.encode(
        {"aut_id": v.uid, "aut_email": v.email, "aut_random_key": "abcdefghij"},
        LINK_KEY,
        algorithm="HS256",
    ),
    "Flask session cookie": _session_cookie,
    "another JWT of the app, SECRET_KEY": lambda v: _app_jwt(v, SECRET_KEY.encode()),
    "link-typed JWT signed with SECRET_KEY": lambda v: _app_jwt(
        v, SECRET_KEY.encode(), typ=LINK_TOKEN_TYPE
    ),
    "link claims and audience, signed with the mailer secret": lambda v: forge(
        LINK_HEADER, _payload(v), MAILER_SECRET
    ),
}


@pytest.mark.parametrize("build", [pytest.param(b, id=name) for name, b in CONFUSION.items()])
def test_other_tokens_are_not_link_tokens(victim: Victim, build: Forgery) -> None:
    victim.attack(build(victim), leaks=(LINK_AUDIENCE, LINK_TOKEN_TYPE))


# --- 11. malformed tokens ------------------------------------------------------------------------


def _signed_raw(header: Any, payload: Any) -> str:
    return forge(header, payload, LINK_KEY)


MALFORMED: dict[str, Forgery] = {
    "two dots only": lambda v: "..",
    "empty header": lambda v: "." + ".".join(v.token.split(".")[1:]),
    "empty payload": lambda v: ".".join((v.token.split(".")[0], "", v.token.split(".")[2])),
    "a.b": lambda v: "a.b",
    "a.b.c.d": lambda v: "a.b.c.d",
    "genuine token plus a fourth segment": lambda v: v.token + ".e30",
    "five segments (JWE shape)": lambda v: ".".join([v.token.split(".")[0]] * 5),
    "one word": lambda v: "confirm",
    "characters outside base64url": lambda v: "!!!.###.$$$",
    "standard base64 alphabet": lambda v: v.token.replace("-", "+").replace("_", "+") + "+",
    "base64 padding": lambda v: v.token + "==",
    "impossible base64 length": lambda v: "a.b.c",
    "header not JSON": lambda v: _signed_raw(b"not json", _payload(v)),
    "header a JSON list": lambda v: _signed_raw(b'["HS256"]', _payload(v)),
    "header a JSON string": lambda v: _signed_raw(b'"HS256"', _payload(v)),
    "payload not JSON": lambda v: _signed_raw(LINK_HEADER, b"sub=1&email=x"),
    "payload a JSON list": lambda v: _signed_raw(LINK_HEADER, b"[1, 2]"),
    "payload a JSON number": lambda v: _signed_raw(LINK_HEADER, b"1"),
    "payload JSON null": lambda v: _signed_raw(LINK_HEADER, b"null"),
    "payload with NaN": lambda v: _signed_raw(
        LINK_HEADER, json.dumps(_payload(v, exp=float("nan"))).encode()
    ),
    "payload with Infinity": lambda v: _signed_raw(
        LINK_HEADER, json.dumps(_payload(v, exp=float("inf"))).encode()
    ),
    "payload not UTF-8": lambda v: _signed_raw(LINK_HEADER, b"\xff\xfe{}"),
    "NUL byte": lambda v: v.token[:10] + "\x00" + v.token[10:],
    "space inside": lambda v: v.token[:10] + " " + v.token[10:],
    "newline inside": lambda v: v.token[:10] + "\n" + v.token[10:],
    "non-ASCII letters": lambda v: "é" * 20 + "." + "é" * 20 + ".é",
    "16 KB token, real secret": lambda v: forge_link(v.uid, v.email, pad="x" * 16_000),
    "1 MB token": lambda v: forge_link(v.uid, v.email, pad="x" * 1_000_000),
}


@pytest.mark.parametrize("build", [pytest.param(b, id=name) for name, b in MALFORMED.items()])
def test_malformed_tokens_are_refused(victim: Victim, build: Forgery) -> None:
    victim.attack(build(victim))


@pytest.mark.parametrize("size", [MAX_TOKEN_LENGTH + 1, 16 * 1024, 1024 * 1024])
def test_oversized_tokens_are_refused_before_decoding(
    victim: Victim, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Spies on PyJWT's entry points show that no byte of an oversized token is decoded."""
    calls: list[str] = []
    for name in ("get_unverified_header", "decode", "decode_complete"):
        original = getattr(jwt, name, None)
        if original is None:  # PyJWT < 2.10 has no top-level decode_complete
            continue

        def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(jwt, name, spy)
    head, _, signature = forge_link(victim.uid, victim.email).split(".")
    oversized = f"{head}.{'A' * (size - len(head) - len(signature) - 2)}.{signature}"
    assert len(oversized) == size
    victim.attack(oversized)
    assert calls == []
    victim.app.test_client().get(victim.path)
    assert calls, "the spies see the decoding of a genuine token"
