"""The remote transport: against the real mailer process, and a scripted stub for the wire."""

from __future__ import annotations

import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest

from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.errors import ConfigurationError, DeliveryError
from flask_confirm_mail.mailer.remote import RemoteTransport
from flask_confirm_mail.transport import ConfirmationEmail
from tests.support.smtp_server import SMTPSink

from .conftest import messages_to
from .forward_proxy import forward_proxy
from .process import MailerProcess
from .stub_http import Reply, closed_port, stub_http_server
from .tokens import LINK_PREFIX, MAILER_SECRET, link_token, unique_address

SECRET = MAILER_SECRET.encode()


def confirmation(
    recipient: str | None = None,
    *,
    purpose: str = "signup",
    prefix: str = LINK_PREFIX,
    context: dict[str, Any] | None = None,
    locale: str | None = None,
) -> ConfirmationEmail:
    recipient = recipient or unique_address("remote")
    return ConfirmationEmail(
        outbox_id=1,
        user_id="42",
        recipient=recipient,
        purpose=purpose,
        link_prefix=prefix,
        link_token=link_token(recipient),
        expires_at=datetime(2030, 1, 1),
        lifetime=timedelta(hours=24),
        message_id="<outbox-1@app.example>",
        context=context or {},
        locale=locale,
    )


def transport(url: str, **options: Any) -> RemoteTransport:
    return RemoteTransport(mailer_url=url, mailer_secret=SECRET, **options)


def test_v1_batch_over_one_connection(mailer: MailerProcess, mailer_sink: SMTPSink) -> None:
    emails = [confirmation(context={"user_name": "Ann", "ignored": 3}) for _ in range(3)]

    with transport(mailer.base_url, extra={"app_name": "Cats"}) as connection:
        for email in emails:
            connection.send(email)
        pool = connection._client().connection_from_url(mailer.base_url)
        assert pool.num_connections == 1
    for email in emails:
        [mail] = messages_to(mailer_sink, email.recipient)
        assert mail.message["Subject"] == "Confirm and access Cats"
        text = mail.message.get_body(("plain",))
        assert text is not None
        assert email.link in text.get_content()
        assert "Hello Ann" in text.get_content()


def test_variance_wire_against_the_legacy_endpoints(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    email = confirmation(purpose="change", context={"access_key": "AK-123"})
    with transport(mailer.base_url, wire="variance") as connection:
        connection.send(email)

    [mail] = messages_to(mailer_sink, email.recipient)
    assert mail.message["Subject"] == "Confirm changed email/login"
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert email.link in text.get_content()
    assert "AK-123" in text.get_content()


#: A sign-up email's subject and greeting in each language, from its catalog.
IN_LANGUAGE = {
    "de": ("Bestätigen Sie Ihre E-Mail-Adresse", "Hallo Ann,"),
    "fr": ("Confirmez votre adresse e-mail", "Bonjour Ann,"),
    "es": ("Confirme su dirección de correo electrónico", "Hola, Ann:"),
    "it": ("Conferma il tuo indirizzo email", "Ciao Ann,"),
    "pt": ("Confirme o seu endereço de e-mail", "Olá, Ann,"),
}


def test_a_locale_with_a_region_falls_back_to_its_language(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    locales = {"de_AT": "de", "fr-CA": "fr", "es_MX": "es", "it_CH": "it", "pt_BR": "pt"}
    emails = [
        (confirmation(context={"user_name": "Ann"}, locale=locale), language)
        for locale, language in locales.items()
        for _ in range(2)
    ]
    with transport(mailer.base_url, extra={"app_name": "Cats"}) as connection:
        with ThreadPoolExecutor(4) as pool:  # the mailer renders them side by side
            list(pool.map(connection.send, [email for email, _ in emails]))

    for email, language in emails:
        [mail] = messages_to(mailer_sink, email.recipient)
        subject, greeting = IN_LANGUAGE[language]
        assert mail.message["Subject"] == subject, email.locale
        text = mail.message.get_body(("plain",))
        html = mail.message.get_body(("html",))
        assert text is not None and html is not None
        assert text.get_content().splitlines()[0] == greeting, email.locale
        assert f'<html lang="{language}">' in html.get_content()


def sent_claims(connection: RemoteTransport, email: ConfirmationEmail) -> dict[str, Any]:
    """The claims of the token that ``connection`` sends for ``email``, either wire."""
    _, path, headers = connection.build_request(email)
    token = headers["Authorization"].removeprefix("Bearer ") if connection.wire == "v1" else path
    claims: dict[str, Any] = jwt.decode(
        token.rpartition("/")[2], options={"verify_signature": False}
    )
    return claims


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_an_unknown_locale_travels_and_gets_english(
    mailer: MailerProcess, mailer_sink: SMTPSink, wire: str
) -> None:
    unknown = confirmation(locale="zz_ZZ")
    unsendable = confirmation(locale="de@euro")  # not a locale the wire carries
    with transport(mailer.base_url, wire=wire) as connection:
        assert sent_claims(connection, unknown)["locale"] == "zz_ZZ"
        assert "locale" not in sent_claims(connection, unsendable)
        connection.send(unknown)
        connection.send(unsendable)

    for email in (unknown, unsendable):
        [mail] = messages_to(mailer_sink, email.recipient)
        assert mail.message["Subject"] == "Confirm and access CatLoader"
        text = mail.message.get_body(("plain",))
        html = mail.message.get_body(("html",))
        assert text is not None and html is not None
        assert text.get_content().splitlines()[0] == "Hello,"
        assert "The link works for 24 hours." in text.get_content()
        assert '<html lang="en">' in html.get_content()


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_mailer_refusal_is_permanent(mailer: MailerProcess, wire: str) -> None:
    email = confirmation(prefix="https://evil.tld/confirm/")
    with transport(mailer.base_url, wire=wire) as connection:
        with pytest.raises(DeliveryError) as info:
            connection.send(email)
    assert info.value.permanent
    assert "403" in str(info.value)
    assert email.link_token not in str(info.value)


def test_wrong_secret_is_permanent(mailer: MailerProcess) -> None:
    remote = RemoteTransport(mailer_url=mailer.base_url, mailer_secret=b"w" * 32)
    with remote as connection, pytest.raises(DeliveryError) as info:
        connection.send(confirmation())
    assert info.value.permanent


def test_smtp_failure_is_temporary_and_retry_works(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    email = confirmation()
    mailer_sink.fail_next(1, 451)
    with transport(mailer.base_url) as connection:
        with pytest.raises(DeliveryError) as info:
            connection.send(email)
        assert not info.value.permanent
        assert "503" in str(info.value)
        connection.send(email)
    assert len(messages_to(mailer_sink, email.recipient)) == 1


def test_v1_request_shape() -> None:
    with stub_http_server() as (url, state):
        email = confirmation(context={"access_key": "AK"})
        with transport(url + "base") as connection:
            connection.send(email)

    [request] = state.requests
    assert request.method == "POST"
    assert request.path == "/base/v1/messages"
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token)["typ"] == "cm-mailer+jwt"
    claims = jwt.decode(
        token, MAILER_SECRET, algorithms=["HS256"], audience="flask-confirm-mail:mailer"
    )
    assert claims["recipient"] == email.recipient
    assert claims["template"] == "signup"
    assert claims["link_url"] == email.link
    assert claims["link_token"] == email.link_token
    assert claims["extra"] == {"access_key": "AK"}
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert abs(claims["iat"] - time.time()) < 5


def test_variance_wire_makes_the_original_call() -> None:
    with stub_http_server() as (url, state):
        email = confirmation(context={"access_key": "AK"})
        other = confirmation()
        with transport(url, wire="variance", legacy_blueprint="/emailservice-usr/") as c:
            c.send(email)
            c.send(other)

    first, second = state.requests
    assert first.method == "GET"
    assert "Authorization" not in first.headers
    prefix = "/emailservice-usr/signup/"
    assert first.path.startswith(prefix)
    payload = jwt.decode(first.path[len(prefix) :], MAILER_SECRET, algorithms=["HS256"])
    assert payload["user_email"] == email.recipient
    assert payload["user_aut_key_or_otp"] == "AK"
    assert payload["email_link_url"] == email.link_prefix
    assert payload["email_link_token"] == email.link_token
    assert 0 < payload["exp"] - payload["iat"] <= 600
    second_payload = jwt.decode(second.path[len(prefix) :], MAILER_SECRET, algorithms=["HS256"])
    assert second_payload["user_aut_key_or_otp"] == ""
    assert second_payload["jti"] != payload["jti"]


@pytest.mark.parametrize(
    ("status", "payload", "wire", "permanent"),
    [
        (400, {"error": 4}, "v1", True),
        (401, {"error": 1}, "v1", True),
        (403, {"error": 3}, "v1", True),
        (404, {"error": 7}, "v1", True),
        (408, None, "v1", False),
        (409, {"error": 6}, "v1", False),
        (429, {"error": 5}, "v1", False),
        (500, None, "v1", False),
        (502, {"error": 2}, "v1", False),
        (503, {"error": 2}, "v1", False),
        (302, None, "v1", False),
        (200, {"error": 2}, "v1", False),
        (200, "not json", "v1", False),
        (200, {"error": True}, "v1", False),
        (200, {"error": 1, "msg": "Problem with token"}, "variance", True),
        (200, {"error": 2, "msg": "(421, b'try later')"}, "variance", False),
    ],
)
def test_answers_other_than_success_fail(
    status: int, payload: Any, wire: str, permanent: bool
) -> None:
    with stub_http_server() as (url, state):
        state.reply(status, payload)
        with transport(url, wire=wire) as connection:
            with pytest.raises(DeliveryError) as info:
                connection.send(confirmation())
    assert info.value.permanent is permanent


def test_success_of_the_original_mailer() -> None:
    with stub_http_server() as (url, state):
        state.reply(200, {"error": 0, "msg": "All ok"})
        with transport(url, wire="variance") as connection:
            connection.send(confirmation())


def test_read_timeout_is_temporary() -> None:
    with stub_http_server() as (url, state):
        state.replies.append(Reply(hang=True))
        started = time.monotonic()
        with transport(url, read_timeout=0.3) as connection:
            with pytest.raises(DeliveryError) as info:
                connection.send(confirmation())
        assert time.monotonic() - started < 3
    assert not info.value.permanent
    assert "in time" in str(info.value)


def test_connection_refused_is_temporary() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    with transport(url, connect_timeout=1) as connection:
        with pytest.raises(DeliveryError) as info:
            connection.send(confirmation())
    assert not info.value.permanent


def test_a_dropped_keep_alive_connection_is_reopened_once() -> None:
    with stub_http_server() as (url, state):
        state.reply(200, drop_after=True)
        state.reply(200)
        with transport(url) as connection:
            connection.send(confirmation())
            time.sleep(0.05)
            connection.send(confirmation())
    assert len(state.requests) == 2
    assert len(state.connections) == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (the SMTP sink's maker): cert and key paths."""
    from tests.support.smtp_server import _write_self_signed_certificate

    return _write_self_signed_certificate(str(tmp_path_factory.mktemp("https")))


def test_https_with_a_trusted_certificate(certificate: tuple[str, str]) -> None:
    trusted = ssl.create_default_context(cafile=certificate[0])
    with stub_http_server(tls=certificate) as (url, state):
        assert url.startswith("https://")
        with transport(url, ssl_context=trusted) as connection:
            connection.send(confirmation())
            connection.send(confirmation())
    assert len(state.requests) == 2
    assert len(state.connections) == 1


def test_https_with_an_untrusted_certificate_is_temporary(certificate: tuple[str, str]) -> None:
    with stub_http_server(tls=certificate) as (url, state):
        with transport(url, connect_timeout=2, read_timeout=2) as connection:
            with pytest.raises(DeliveryError) as info:
                connection.send(confirmation())
    assert not info.value.permanent
    assert "not trusted" in str(info.value)
    assert state.requests == []


def test_unknown_purpose_is_permanent() -> None:
    with transport("http://127.0.0.1:9/") as connection:
        with pytest.raises(DeliveryError) as info:
            connection.send(confirmation(purpose="resetkey"))
    assert info.value.permanent


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mailer_secret": b"short"}, "32 bytes"),
        ({"wire": "v2"}, "wire"),
        ({"mailer_url": "http://mailer.example/"}, "https"),
        ({"mailer_url": "ftp://mailer.example/"}, "http(s)"),
        ({"mailer_url": "mailer.example"}, "http(s)"),
        ({"mailer_url": "https://u:p@mailer.example/"}, "user information"),
        ({"mailer_url": "https://mailer.example/?x=1"}, "query"),
        ({"mailer_url": "https://mailer.example:99999/"}, "port"),
        ({"legacy_blueprint": "a b"}, "blueprint"),
        ({"legacy_blueprint": "../x?"}, "blueprint"),
        ({"legacy_blueprint": "a/../b"}, "blueprint"),
        ({"read_timeout": 0}, "timeouts"),
    ],
)
def test_refused_options(options: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"mailer_url": "https://mailer.example/", "mailer_secret": SECRET}
    values.update(options)
    with pytest.raises(ConfigurationError) as info:
        RemoteTransport(**values)
    assert message in str(info.value)


def test_insecure_http_can_be_allowed_explicitly() -> None:
    remote = transport("http://mailer.internal:8000", allow_insecure_http=True)
    assert remote.base_path == "/"
    assert remote.port == 8000
    assert MAILER_SECRET not in repr(remote)


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_http_proxy_from_the_environment_is_used(no_proxy_env: pytest.MonkeyPatch) -> None:
    with stub_http_server() as (url, state), forward_proxy() as (proxy_url, forwarded):
        no_proxy_env.setenv("HTTP_PROXY", proxy_url)
        with transport(url) as connection:
            assert connection.proxy_url == proxy_url
            connection.send(confirmation())
    assert forwarded == [f"{url}v1/messages"]
    assert [request.path for request in state.requests] == ["/v1/messages"]


def test_no_proxy_bypasses_the_proxy(no_proxy_env: pytest.MonkeyPatch) -> None:
    with stub_http_server() as (url, state), forward_proxy() as (proxy_url, forwarded):
        no_proxy_env.setenv("HTTP_PROXY", proxy_url)
        no_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        with transport(url) as connection:
            assert connection.proxy_url is None
            connection.send(confirmation())
    assert forwarded == []
    assert len(state.requests) == 1


def test_an_unreachable_proxy_is_temporary(no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    with stub_http_server() as (url, state), transport(url, connect_timeout=1) as connection:
        with pytest.raises(DeliveryError) as info:
            connection.send(confirmation())
    assert not info.value.permanent
    assert "proxy" in str(info.value)
    assert state.requests == []


def test_parallel_sends_share_one_pool_of_pool_size(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    emails = [confirmation() for _ in range(8)]
    with transport(mailer.base_url, pool_size=4) as connection:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(connection.send, emails))
        kept = connection._client().connection_from_url(mailer.base_url).pool
        assert kept is not None and kept.qsize() <= 4
    for email in emails:
        assert len(messages_to(mailer_sink, email.recipient)) == 1


def test_the_pool_holds_as_many_connections_as_the_delivery_concurrency(
    build_app: Any, tmp_path: Any, mailer: MailerProcess
) -> None:
    app = build_app(
        f"sqlite:///{tmp_path / 'pool.db'}",
        config={
            "CONFIRM_MAIL_MAILER_URL": mailer.base_url,
            "CONFIRM_MAIL_MAILER_SECRET": MAILER_SECRET,
            "CONFIRM_MAIL_CONCURRENCY": 16,
        },
        transport=RemoteTransport(),
    )
    remote = get_flow(app).transport
    assert isinstance(remote, RemoteTransport)
    assert remote.pool_size == 16
