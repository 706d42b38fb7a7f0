"""The text a caller may put into an email: short plain names, never a message of its own.

A caller holding the mailer secret chooses the ``extra`` values (``app_name``,
``user_name``, ``access_key``) that the email shows, the app's name in its Subject.
Left free, that is a channel for phishing from the sender's good address ("Your
account is locked, call ... or visit evil.example"). So each value must be short and
plain: letters, digits, marks, spaces and a few punctuation marks for names; no
URLs, domain names, addresses, markup or control and format characters (bidi
overrides included). ``access_key`` is a code: ASCII letters, digits, ``-`` and
``_``. An ``app_name`` that is the host of the link itself passes, since the link is
on the allowlist anyway (an app without ``CONFIRM_MAIL_APP_NAME`` sends its host).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

__all__ = ["MAX_LENGTHS", "TextRefused", "check_extra"]

#: The longest each ``extra`` value may be, in characters.
MAX_LENGTHS: Mapping[str, int] = {"app_name": 60, "user_name": 64, "access_key": 64}
#: Punctuation names may hold besides letters, marks, digits and single spaces.
_NAME_PUNCTUATION = frozenset(" -'\u2019.,()")
#: A dot between two letters or digits: ``evil.example``, ``x.co`` (a domain name).
_DOMAIN_LIKE = re.compile(r"[^\W_]\.[^\W_]")
_ACCESS_KEY = re.compile(r"[A-Za-z0-9_-]+")


class TextRefused(ValueError):
    """A caller-supplied value is not allowed; the message names the field, not the value."""


def _check_name(field: str, value: str, allowed_host: str | None) -> None:
    if allowed_host is not None and field == "app_name" and value.lower() == allowed_host:
        return
    if value != value.strip() or "  " in value:
        raise TextRefused(f"extra.{field} must not start or end with spaces or hold two.")
    for char in value:
        if char not in _NAME_PUNCTUATION and unicodedata.category(char)[0] not in "LMN":
            raise TextRefused(
                f"extra.{field} may hold only letters, digits, spaces and - ' . , ( ); "
                "no URLs, addresses, markup or control characters."
            )
    if _DOMAIN_LIKE.search(value):
        raise TextRefused(f"extra.{field} must not hold a domain name or URL.")


def check_extra(extra: Mapping[str, str], *, link_host: str | None = None) -> None:
    """Refuse ``extra`` unless every value is short and plain (see the module's text).

    :param link_host: the host of the email's (allowed) link; an ``app_name`` equal to
        it passes.
    :raises TextRefused: naming the field and the rule it breaks.
    """
    for field, value in extra.items():
        limit = MAX_LENGTHS.get(field)
        if limit is None:
            continue
        if len(value) > limit:
            raise TextRefused(f"extra.{field} must be at most {limit} characters.")
        if field == "access_key":
            if _ACCESS_KEY.fullmatch(value) is None:
                raise TextRefused("extra.access_key may hold only ASCII letters, digits, - and _.")
        else:
            _check_name(field, value, link_host)
