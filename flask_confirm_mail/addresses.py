"""Email addresses: exactly one plain ``local@domain`` address, in one canonical form.

Refused: a non-ASCII local part, and anything a mail system could read as several recipients
or an extra header (CR/LF, commas, comments, quoting, angle brackets, encoded words). The
canonical form is trimmed, its domain in IDNA 2008 form (UTS 46 non-transitional: ``fuß.de``
is not ``fuss.de``), lower-cased whole as in Flask-Security and django-allauth: providers
ignore the local part's case, and one mailbox must not own several accounts.
"""

from __future__ import annotations

import re

import idna

from .errors import AddressError

MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_LENGTH = 64

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS_RE = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:{_LABEL}\.)+{_LABEL})")
_NOT_PLAIN = "The email address is not a single plain address."


def normalize_address(value: object) -> str:
    """Return ``value`` in canonical form, or raise :class:`AddressError` (whose message never
    repeats the value)."""
    if not isinstance(value, str):
        raise AddressError("The email address must be a string.")
    candidate = value.strip(" \t")  # only blanks: a line break anywhere is refused
    if not candidate:
        raise AddressError("The email address is empty.")
    if len(candidate) > MAX_ADDRESS_LENGTH:
        raise AddressError("The email address is too long.")
    local, at, domain = candidate.rpartition("@")
    if at:
        candidate = f"{local}@{ascii_domain(domain)}"
        if len(candidate) > MAX_ADDRESS_LENGTH:
            raise AddressError("The email address is too long.")
    match = _ADDRESS_RE.fullmatch(candidate)
    if match is None or len(match["local"]) > MAX_LOCAL_LENGTH or "=?" in candidate:
        raise AddressError(_NOT_PLAIN)
    return candidate.lower()


def ascii_domain(domain: str) -> str:
    """``domain`` with its internationalized labels as A-labels (``fuß.de`` ->
    ``xn--fu-hia.de``), as headers and SMTP need them; raises :class:`AddressError`."""
    # xn-- labels are checked too, so an invalid A-label is refused rather than stored.
    if domain.isascii() and "xn--" not in domain.lower():
        return domain
    try:
        # The idna package, not the stdlib's codec: that is IDNA 2003, which maps ß to
        # ss and so would mail cat@fuß.de's link to cat@fuss.de.
        return str(idna.encode(domain, uts46=True).decode("ascii"))
    except (idna.IDNAError, UnicodeError):
        raise AddressError(_NOT_PLAIN) from None


def canonical_or_none(value: object) -> str | None:
    """``value`` in canonical form, or ``None`` where :func:`normalize_address` refuses it."""
    try:
        return normalize_address(value)
    except AddressError:
        return None


def is_valid_address(value: object) -> bool:
    """Whether :func:`normalize_address` accepts ``value``."""
    return canonical_or_none(value) is not None


def mask_address(address: str) -> str:
    """``address`` mostly hidden, for the email-change notice: ``j***@e***.com``, whatever
    the length; ``c***@f***.de`` for ``cat@fuß.de`` (not its stored ``xn--`` form)."""
    local, _, domain = address.rpartition("@")
    if "xn--" in domain:
        try:
            domain = idna.decode(domain)
        except (idna.IDNAError, UnicodeError):
            pass  # not a stored form: mask it as it is
    labels = domain.split(".")
    # A top-level domain is a short word; anything else could carry a sender's text.
    top = labels[-1] if len(labels) > 1 and labels[-1].isalpha() and len(labels[-1]) <= 10 else ""
    return f"{local[:1]}***@{domain[:1]}***{'.' + top if top else ''}"
