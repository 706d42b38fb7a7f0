"""What the fuzz tests share: Hypothesis settings, strategies for requests, the checks.

Every strategy draws what an attacker controls in an HTTP request: the method, the path
(known routes, their spellings, random segments), headers (``Content-Type`` with odd
charsets, ``Accept``, ``Host``, ``Authorization``), form and JSON bodies (deep, wide, of every
JSON type), raw bytes, and tokens (random text, and valid tokens mutated by one edit).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

#: Reproducible and bounded: the same examples on every run, no example database.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Examples per test on PostgreSQL, where a request costs several times more: what the
#: database can change (types, NUL bytes, lengths) shows in far fewer examples.
POSTGRES_EXAMPLES = 50


def fuzz_settings(database_url: str) -> settings:
    """:data:`FUZZ`, with fewer examples on PostgreSQL."""
    if database_url.startswith("postgresql"):
        return settings(FUZZ, max_examples=POSTGRES_EXAMPLES)
    return FUZZ


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
_ODD_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["", " ", "\x00", "\r\n", "%00", "..", "%2e%2e", "\u202e", "a" * 3000])
#: Header values that a client may send (latin-1: what HTTP carries).
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)

CONTENT_TYPES = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "application/json; charset=latin-1",
            "application/json; charset=nope",
            "application/json; charset=",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-7",
            "application/x-www-form-urlencoded; charset=bogus",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/merge-patch+json",
            "*/*",
            ";;;",
            "",
        ]
    )
    | HEADER_TEXT
)
ACCEPTS = (
    st.sampled_from(
        [
            "application/json",
            "text/html",
            "application/json;q=0.9, text/html;q=0.1",
            "text/html;q=abc",
            "*/*;q=-1",
            "application/json;q=1e400",
            ",,,",
            "",
        ]
    )
    | HEADER_TEXT
)
HOSTS = (
    st.sampled_from(
        ["app.example.com", "", "a b", "[::1", "évil.example", "x" * 300, "host:99999", "@:"]
    )
    | HEADER_TEXT
)


def _splits(host: str) -> bool:
    try:
        return urlsplit(f"http://{host}/").port != -1
    except ValueError:
        return False


if tuple(int(p) for p in version("werkzeug").split(".")[:3]) < (3, 1, 7):
    # Before 3.1.7 Werkzeug's test client itself raises on a Host that urlsplit refuses.
    HOSTS = HOSTS.filter(_splits)

EXTRA_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Authorization",
            "Cookie",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "X-Forwarded-Proto",
            "Origin",
            "Referer",
            "Accept-Language",
            "Accept-Charset",
            "Content-Encoding",
            "Transfer-Encoding",
            "If-None-Match",
            "Range",
            "X-Twilio-Email-Event-Webhook-Signature",
            "X-Twilio-Email-Event-Webhook-Timestamp",
        ]
    ),
    HEADER_TEXT | st.sampled_from(["Basic !!!", "Basic " + "QQ==" * 50, "Bearer ", "gzip"]),
    max_size=3,
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _ODD_TEXT
    | st.sampled_from(["\ud800", "x\udfff@example.org"])  # lone surrogates: JSON allows them
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return ('{"email":' * depth + "1" + closer * depth).encode()
    return (opener * depth + closer * depth).encode()


#: Raw bodies: JSON nested far past the parser's recursion limit, wide JSON, broken JSON,
#: bytes that are not UTF-8, a big form.
RAW_BODIES = st.sampled_from(
    [
        _nested(100_000, "["),
        _nested(5_000, "{"),
        b'{"email": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        json.dumps({"email": ["x"] * 20_000}).encode(),
        json.dumps({f"k{i}": i for i in range(5000)}).encode(),
        b'{"email": "a@example.org"',
        b"\xff\xfe\x00{\x00}",
        b'{"email": "\\ud800@example.org"}',
        b"email=" + b"a" * 200_000,
        b"&".join(b"k%d=v" % i for i in range(3000)),
        b"--x\r\nContent-Disposition: form-data; name=email\r\n\r\nx\r\n",
        b"",
    ]
) | st.binary(max_size=300)

#: A form: short or overlong values, odd keys, repeated keys.
FORMS = st.lists(
    st.tuples(st.sampled_from(["email", "csrf_token", "token", "e-mail"]) | _ODD_TEXT, _ODD_TEXT),
    max_size=4,
).map(MultiDict)


@st.composite
def mutated(draw: st.DrawFn, token: str) -> str:
    """``token`` changed by one edit: a character replaced, cut, doubled, or re-segmented."""
    choice = draw(st.integers(0, 6))
    index = draw(st.integers(0, max(len(token) - 1, 0)))
    if choice == 0:
        return token[:index] + draw(st.characters(codec="ascii")) + token[index + 1 :]
    if choice == 1:
        return token[:index]
    if choice == 2:
        return token + token
    if choice == 3:
        return token + "." + draw(st.text("AZaz09-_", max_size=20))
    if choice == 4:
        return token.replace(".", draw(st.sampled_from(["..", "", ". ", "%2E"])), 1)
    if choice == 5:
        return token.upper()
    return token[:index] + "=" * draw(st.integers(1, 3)) + token[index:]


def tokens(valid: Iterable[str]) -> st.SearchStrategy[str]:
    """Random text, JWT-shaped junk, and one-edit mutations of the ``valid`` tokens."""
    valid = list(valid)
    shaped = st.builds(lambda a, b, c: f"{a}.{b}.{c}", *[st.text("AZaz09-_", max_size=30)] * 3)
    return st.one_of(
        _ODD_TEXT,
        shaped,
        st.sampled_from(valid).flatmap(mutated),
        st.sampled_from([deep_header_token(), "e" * 5000, "a.b.c"]),
    )


def deep_header_token() -> str:
    """A JWT whose header is JSON nested past the parser's recursion limit."""
    header = base64.urlsafe_b64encode(b"[" * 1400 + b"]" * 1400).rstrip(b"=").decode()
    return f"{header}.e30.c2ln"


def assert_handled(status: int, body: bytes, *, what: str) -> None:
    """A 4xx/2xx/3xx answer (or a 503 only where asked), no stack trace in the body."""
    assert status < 500, f"{what} answered {status}: {body[:300]!r}"
    lowered = body.lower()
    assert b"traceback" not in lowered and b'file "' not in lowered, f"{what}: {body[:300]!r}"


def log_text(records: Iterable[Any]) -> str:
    """The messages and tracebacks of captured log records, as one text."""
    return "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in records)


def assert_secret_free(logs: str, secrets: Iterable[str], *, what: str) -> None:
    """No token, nor its signature, in ``logs`` (short strings say nothing: skipped)."""
    for secret in (secret for secret in secrets if len(secret) >= 16):
        signature = secret.rpartition(".")[2]
        assert secret not in logs, f"{what}: a live token reached the log"
        assert len(signature) < 16 or signature not in logs, f"{what}: a signature in the log"


def header_dict(**values: Any) -> dict[str, str]:
    """The headers to send: the ``None`` ones left out."""
    return {name.replace("_", "-"): value for name, value in values.items() if value is not None}
