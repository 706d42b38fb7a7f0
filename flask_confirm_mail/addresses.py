"""Email addresses: exactly one plain ``local@domain`` address, in one canonical form.

Anything that a mail system could read as more than one recipient, or as an extra
header, is refused: CR/LF, commas, comments, quoted local parts, angle brackets,
encoded words. The local part must be ASCII (no SMTPUTF8); an internationalized domain
is accepted and turned into its ASCII (IDNA 2008, ``xn--``) form.

The canonical form, which the extension stores and compares everywhere an address
enters (sign-up, change, resend, CLI, lookups), is the address with surrounding blanks
dropped, the domain in IDNA 2008 form (UTS 46 mapping, non-transitional, as browsers and
registries use it: ``fuß.de`` and ``fuss.de`` are two domains) and the whole address
lower-cased. Lower-casing the
local part is what Flask-Security and django-allauth do: mailbox providers treat it
without case, and one mailbox must not own several accounts.
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


def _ascii_domain(domain: str) -> str:
    """``domain`` in IDNA 2008 (A-label) form; plain ASCII domains are returned unchanged.

    A domain with ``xn--`` labels goes through the check too, so a label that is no
    valid A-label is refused rather than stored.
    """
    if domain.isascii() and "xn--" not in domain.lower():
        return domain
    try:
        # The idna package, not the standard library's codec: that one is IDNA 2003,
        # which maps ß to ss and so would mail cat@fuß.de's link to cat@fuss.de.
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise AddressError("The email address is not a single plain address.") from None


def normalize_address(value: object) -> str:
    """Return ``value`` in canonical form, or raise :class:`AddressError`.

    Surrounding spaces and tabs are dropped, an internationalized domain is turned into
    its IDNA form and the address is lower-cased (see the module's description). The
    error message never repeats the value.
    """
    if not isinstance(value, str):
        raise AddressError("The email address must be a string.")
    # Only blanks are trimmed: a line break anywhere, even at the end, is refused.
    candidate = value.strip(" \t")
    if not candidate:
        raise AddressError("The email address is empty.")
    if len(candidate) > MAX_ADDRESS_LENGTH:
        raise AddressError("The email address is too long.")
    local, at, domain = candidate.rpartition("@")
    if at:
        candidate = f"{local}@{_ascii_domain(domain)}"
    if len(candidate) > MAX_ADDRESS_LENGTH:
        raise AddressError("The email address is too long.")
    match = _ADDRESS_RE.fullmatch(candidate)
    if match is None or len(match["local"]) > MAX_LOCAL_LENGTH or "=?" in candidate:
        raise AddressError("The email address is not a single plain address.")
    return candidate.lower()


def is_valid_address(value: object) -> bool:
    """Whether :func:`normalize_address` accepts ``value``."""
    try:
        normalize_address(value)
    except AddressError:
        return False
    return True


def address_domain(address: str) -> str:
    """The domain part of an address that :func:`normalize_address` accepted."""
    return address.rpartition("@")[2]


def mask_address(address: str) -> str:
    """``address`` with most of it hidden, for the email-change notice: ``j***@e***.com``.

    Kept: the first character of the local part, the first character of the domain and
    the domain's last label (``.com``, ``.uk``); each hidden run is ``***`` whatever its
    length, so the length of the address does not show either. An internationalized
    domain is shown as its user wrote it (``c***@f***.de`` for ``cat@fuß.de``, stored
    as ``xn--fu-hia.de``), not by the ``x`` of its stored form.
    """
    local, _, domain = address.rpartition("@")
    if "xn--" in domain:
        try:
            domain = idna.decode(domain)
        except (idna.IDNAError, UnicodeError):
            pass  # not a stored form (normalize_address checks those): mask it as it is
    labels = domain.split(".")
    tail = f".{labels[-1]}" if len(labels) > 1 else ""
    return f"{local[:1]}***@{domain[:1]}***{tail}"
