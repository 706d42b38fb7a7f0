"""Link-token claims: required, typed, and within the clock's bounds.

Cases 5-8 of the adversarial list (RFC 8725 3.10 and 3.11; RFC 7519 4.1; the original's
``KeyError`` 500 on a missing field). Tokens here are signed with the app's real secret,
so the claim under test is the only thing wrong with them. Refusals happen before the
database is touched (asserted by ``Victim.attack``), so the app tests run on SQLite only.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from flask_confirm_mail.confirmation import LINK_LEEWAY
from flask_confirm_mail.errors import ExpiredToken, InvalidToken
from flask_confirm_mail.tokens import MAX_LEEWAY, LinkTokenSigner
from tests.security.forgery import LINK_HEADER, LINK_KEY, MISSING, forge, link_header, link_payload
from tests.security.outcomes import JSON, count_queries, sqlite_only
from tests.security.victims import Victim, sign_up
from tests.support.smtp_server import SMTPSink

LIFETIME = 48 * 3600


def _forge(v: Victim, header: dict[str, Any] | None = None, **claims: Any) -> str:
    return forge(header or LINK_HEADER, link_payload(v.uid, v.email, **claims), LINK_KEY)


def _confirm_json(v: Victim, token: str) -> Any:
    return v.app.test_client().post(f"/confirm/{token}", headers=JSON)


@sqlite_only
def test_the_control_token_is_accepted(victim: Victim) -> None:
    """Without the faults below, the same builder's token confirms: the cases can fail."""
    answer = _confirm_json(victim, _forge(victim))
    assert answer.status_code == 200 and answer.json["status"] == "confirmed"


# --- 5. every required claim, missing ------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti", "email", "aud"])
def test_missing_claim_is_refused(victim: Victim, claim: str) -> None:
    victim.attack(_forge(victim, **{claim: MISSING}))


@sqlite_only
@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti", "email", "aud"])
def test_null_claim_is_refused(victim: Victim, claim: str) -> None:
    victim.attack(_forge(victim, **{claim: None}))


@sqlite_only
def test_missing_purpose_header_is_refused(victim: Victim) -> None:
    """``typ`` names the token's purpose in the header; without it the token is refused."""
    victim.attack(_forge(victim, header=link_header(typ=MISSING)))


# --- 6. expiry around the leeway, and the leeway's cap -------------------------------------------


@sqlite_only
def test_expiry_is_exact_to_the_second_around_the_leeway(
    clock: Any, make_app: Any, smtp_server: SMTPSink
) -> None:
    leeway = LINK_LEEWAY
    victim = sign_up(make_app(), smtp_server)
    issued = int(time.time())
    clock.shift(LIFETIME + leeway + 1)
    victim.attack(victim.token, status=410)
    clock.move_to(issued + LIFETIME + leeway - 1)
    page = victim.app.test_client().get(victim.path)
    assert page.status_code == 200 and b"Confirm my email address" in page.data
    assert _confirm_json(victim, victim.token).json["status"] == "confirmed"


def test_codec_caps_a_leeway_given_in_code(clock: Any) -> None:
    signer = LinkTokenSigner(LINK_KEY, lifetime=timedelta(hours=1), leeway=10**6)
    token = signer.issue("1", "cat@example.org")
    clock.shift(3600 + MAX_LEEWAY - 1)
    assert signer.verify(token).user_id == "1"
    clock.shift(2)
    with pytest.raises(ExpiredToken):
        signer.verify(token)


# --- 7. issued or valid only in the future -------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iat": 31, "exp": 31 + 3600}, id="iat past the leeway"),
        pytest.param({"iat": 86400, "exp": 86400 + 3600}, id="iat tomorrow"),
        pytest.param({"iat": 10**10, "exp": 10**10 + 3600}, id="iat in the year 2286"),
        pytest.param({"nbf": 31}, id="nbf past the leeway"),
        pytest.param({"nbf": 86400}, id="nbf tomorrow"),
    ],
)
def test_future_iat_or_nbf_is_refused(victim: Victim, clock: Any, changes: dict[str, int]) -> None:
    now = int(time.time())
    shifted = {name: (value if value >= 10**10 else now + value) for name, value in changes.items()}
    victim.attack(_forge(victim, now=now, **shifted))


@sqlite_only
def test_iat_within_the_leeway_is_clock_skew(victim: Victim, clock: Any) -> None:
    """The control for the cases above: 29 seconds ahead is within the 30 s leeway."""
    now = int(time.time())
    answer = _confirm_json(victim, _forge(victim, now=now + 29))
    assert answer.json["status"] == "confirmed"


# --- 8. claims of the wrong type or size ---------------------------------------------------------

BAD_TIMES: dict[str, tuple[dict[str, Any], int]] = {
    'exp "abc"': ({"exp": "abc"}, 400),
    "exp 1e300": ({"exp": 1e300}, 400),
    "exp 10**30": ({"exp": 10**30}, 400),
    "exp a digit string": ({"exp": str(int(time.time()) + 3600)}, 400),
    "exp a float": ({"exp": time.time() + 3600.5}, 400),
    "exp a list": ({"exp": [int(time.time()) + 3600]}, 400),
    "exp an object": ({"exp": {"$gt": 0}}, 400),
    "exp negative": ({"exp": -1}, 410),
    "exp zero": ({"exp": 0}, 410),
    "exp true": ({"exp": True}, 410),
    "exp before iat": ({"lifetime": -60}, 410),
    "exp equal to iat": ({"lifetime": 0}, 400),
    "lifetime over the app's": ({"lifetime": LIFETIME + 1}, 400),
    'iat "abc"': ({"iat": "abc"}, 400),
    "iat a float": ({"iat": time.time()}, 400),
    "iat negative": ({"iat": -1}, 400),
    "iat a list": ({"iat": [1]}, 400),
    "iat true": ({"iat": True}, 400),
}


@sqlite_only
@pytest.mark.parametrize("changes,status", list(BAD_TIMES.values()), ids=list(BAD_TIMES))
def test_bad_time_claims_are_refused(victim: Victim, changes: dict[str, Any], status: int) -> None:
    victim.attack(_forge(victim, **changes), status=status)


BAD_SUBJECTS: dict[str, Any] = {
    "a list": [1],
    "null": None,
    "the number 0": 0,
    "the number of the user": 1,
    "an object": {"id": 1},
    "true": True,
    "empty": "",
    "letters": "abc",
    "negative": "-1",
    "leading zero": "01",
    "decimal": "1.0",
    "exponent": "1e0",
    "padded": " 1",
    "trailing newline": "1\n",
    "SQL": "1 OR 1=1",
    "fullwidth digit": "\uff11",
    "Arabic-Indic digit": "\u0661",
    "20 digits": "9" * 20,
    "100 characters": "1" * 100,
    "2 KB": "1" * 2048,
    "10 KB": "1" * 10 * 1024,
}


@sqlite_only
@pytest.mark.parametrize("sub", list(BAD_SUBJECTS.values()), ids=list(BAD_SUBJECTS))
def test_malformed_subject_is_refused_without_a_query(victim: Victim, sub: Any) -> None:
    victim.attack(_forge(victim, sub=sub))


@sqlite_only
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"email": ["victim@example.org"]}, id="email a list"),
        pytest.param({"email": 1}, id="email a number"),
        pytest.param({"email": ""}, id="email empty"),
        pytest.param({"email": "x" * 300 + "@example.org"}, id="email too long"),
        pytest.param({"email": "victim@example.org" + " " * 3000}, id="email padded to 3 KB"),
        pytest.param({"jti": 12345678901}, id="jti a number"),
        pytest.param({"jti": ""}, id="jti empty"),
        pytest.param({"jti": "short"}, id="jti too short"),
        pytest.param({"jti": "j" * 200}, id="jti too long"),
        pytest.param({"aud": 1}, id="aud a number"),
        pytest.param({"aud": {"a": "flask-confirm-mail:link"}}, id="aud an object"),
    ],
)
def test_other_mistyped_claims_are_refused(victim: Victim, changes: dict[str, Any]) -> None:
    victim.attack(_forge(victim, **changes))


@sqlite_only
def test_well_formed_unknown_subject_costs_one_lookup_and_is_invalid(victim: Victim) -> None:
    """The contrast to the cases above: a plausible id is looked up, and refused."""
    token = _forge(victim, sub=str(victim.uid + 1))
    with count_queries(victim.app) as statements:
        victim.attack(token, queries=True)
    assert statements, "a well-formed subject is looked up"


def test_codec_errors_are_token_errors_for_every_bad_subject() -> None:
    """The signer itself, not only the route, refuses each bad subject with InvalidToken."""
    signer = LinkTokenSigner(LINK_KEY, lifetime=timedelta(hours=48))
    for sub in (s for s in BAD_SUBJECTS.values() if not isinstance(s, str) or len(s) > 64):
        with pytest.raises(InvalidToken):
            signer.verify(forge(LINK_HEADER, link_payload(1, "a@example.org", sub=sub), LINK_KEY))
