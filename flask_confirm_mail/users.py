"""The user side: :class:`ConfirmableMixin` for a new model, and :class:`UserColumns`, which
reads and writes the address and confirmation columns of any mapped model, an existing
table's included (``ConfirmMail(email_attribute=..., confirmed_attribute=...)``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column, scoped_session

from .addresses import normalize_address
from .errors import AddressError, ConfigurationError, InvalidToken
from .outbox import Purpose

_INT_ID = re.compile(r"[1-9][0-9]{0,17}|0")
AnySession = Session | scoped_session[Any]


class ConfirmableMixin:
    """Columns for a new Flask-SQLAlchemy user model: ``email``, the unique login;
    ``email_confirmed_at``, when it was confirmed (naive UTC), else ``None``; ``pending_email``,
    a new address waiting for confirmation after a change (``email`` stays the login until
    then). Indexed: each sign-up, change and confirmation clears the address from other
    accounts' ``pending_email``, and without the index that UPDATE reads the whole table while
    it holds the write lock."""

    @declared_attr
    def email(cls) -> Mapped[str]:
        return mapped_column(sa.String(254), unique=True, index=True)

    @declared_attr
    def email_confirmed_at(cls) -> Mapped[datetime | None]:
        return mapped_column(sa.DateTime(), nullable=True, default=None)

    @declared_attr
    def pending_email(cls) -> Mapped[str | None]:
        return mapped_column(sa.String(254), nullable=True, default=None, index=True)

    @property
    def email_confirmed(self) -> bool:
        """Whether ``email`` is confirmed."""
        return self.email_confirmed_at is not None


class UserColumns:
    """Where a user model keeps its id, address and confirmation; reads and writes them.

    :param model: the mapped user class.
    :param email: attribute holding the address.
    :param confirmed: attribute recording confirmation: a date/time or a boolean column.
    :param pending_email: attribute holding an address waiting for confirmation after a
        change, or ``None`` for tables without one (a change then replaces the address at
        once and marks it unconfirmed, as the original did).
    """

    def __init__(
        self, model: type[Any], *, email: str, confirmed: str, pending_email: str | None
    ) -> None:
        mapper = sa.inspect(model, raiseerr=False)
        if mapper is None:
            raise ConfigurationError("user_model must be a mapped (Flask-SQLAlchemy) model class.")
        if len(mapper.primary_key) != 1:
            raise ConfigurationError("user_model must have a single-column primary key.")
        self.model, self.id_column = model, mapper.primary_key[0]
        self.id_attribute = mapper.get_property_by_column(self.id_column).key
        self.email_attribute, self.confirmed_attribute = email, confirmed
        self.pending_attribute = pending_email
        self.email_column = self._column(mapper, email)
        self.confirmed_column = self._column(mapper, confirmed)
        self.pending_column = None if pending_email is None else self._column(mapper, pending_email)
        columns = [c for c in (self.email_column, self.pending_column) if c is not None]
        #: The longest address the columns hold (a 254-character address is valid).
        self.max_address_length = min(
            filter(None, (getattr(c.type, "length", None) for c in columns)), default=None
        )
        self.confirmed_is_boolean = isinstance(self.confirmed_column.type, sa.Boolean)
        if not isinstance(self.confirmed_column.type, (sa.Boolean, sa.DateTime)):
            raise ConfigurationError(
                f"user_model.{confirmed} must be a Boolean or DateTime column."
            )
        kinds = ((sa.Integer, int), (sa.Uuid, uuid.UUID))
        self._id_type: Callable[[str], Any] = next(
            (kind for sql_type, kind in kinds if isinstance(self.id_column.type, sql_type)), str
        )

    @staticmethod
    def _column(mapper: Any, attribute: str) -> sa.Column[Any]:
        columns = getattr(mapper.attrs.get(attribute), "columns", None)
        if not columns:
            raise ConfigurationError(f"user_model has no column attribute {attribute!r}.")
        column: sa.Column[Any] = columns[0]
        return column

    def id_of(self, user: Any) -> str:
        return str(getattr(user, self.id_attribute))

    def email_of(self, user: Any) -> str | None:
        value = getattr(user, self.email_attribute)
        return None if value is None else str(value)

    def pending_of(self, user: Any) -> str | None:
        value = None if self.pending_attribute is None else getattr(user, self.pending_attribute)
        return None if value is None else str(value)

    def is_confirmed(self, user: Any) -> bool:
        value = getattr(user, self.confirmed_attribute)
        return value is True if self.confirmed_is_boolean else value is not None

    def confirmed_value(self, now: datetime) -> Any:
        return True if self.confirmed_is_boolean else now

    def set_unconfirmed(self, user: Any) -> None:
        setattr(user, self.confirmed_attribute, False if self.confirmed_is_boolean else None)

    def set_pending(self, user: Any, address: str | None) -> None:
        if self.pending_attribute is not None:
            setattr(user, self.pending_attribute, address)

    def check_fits(self, address: str) -> str:
        """``address``, or AddressError if it is longer than the columns hold."""
        if self.max_address_length is not None and len(address) > self.max_address_length:
            raise AddressError("The email address is too long.")
        return address

    def _changed_addresses(self, user: Any) -> Iterator[tuple[str, Any]]:
        state = sa.inspect(user)
        for attribute in (self.email_attribute, self.pending_attribute):
            if attribute is not None and state.attrs[attribute].history.has_changes():
                yield attribute, getattr(user, attribute)

    def canonicalize(self, user: Any, *, strict: bool) -> None:
        """Rewrite ``user``'s changed addresses in canonical form; an invalid one raises
        :class:`~flask_confirm_mail.errors.AddressError` with ``strict``, else stays as it is."""
        for attribute, value in self._changed_addresses(user):
            if value is None and attribute == self.pending_attribute:
                continue
            try:
                canonical = self.check_fits(normalize_address(value))
            except AddressError:
                if strict:
                    raise
                continue
            if canonical != value:
                setattr(user, attribute, canonical)

    def void_claims_of(self, session: AnySession, user: Any) -> None:
        """After a flush wrote ``user``'s changed addresses, void other accounts' claims."""
        for _, value in self._changed_addresses(user):
            if value is not None:
                self.void_pending_claims(session, value, getattr(user, self.id_attribute))

    def void_pending_claims(self, session: AnySession, address: str, user_id: Any) -> None:
        """Clear ``address`` as the pending address of every account but ``user_id``: run
        when an account asks for ``address`` (sign-up, change) and when it confirms it, so a
        pending address identifies one account and links mailed to others for it stop working."""
        if (statement := self._void_claims(address, user_id)) is not None:
            session.connection().execute(statement)

    def _void_claims(self, address: str, user_id: Any) -> sa.Update | None:
        if (pending := self.pending_column) is None:
            return None
        claimed = sa.and_(pending == address, self.id_column != user_id)
        return sa.update(self.model.__table__).where(claimed).values({pending: None})

    def cancel_pending(self, session: AnySession, user_id: Any, email: str, address: str) -> bool:
        """Clear ``user_id``'s pending ``address`` with one conditional UPDATE, if ``email`` is
        still its address: whether it did."""
        if (pending := self.pending_column) is None:
            return False
        mine = sa.and_(self.id_column == user_id, self.email_column == email, pending == address)
        update = sa.update(self.model.__table__).where(mine).values({pending: None})
        return bool(session.execute(update).rowcount == 1)  # type: ignore[attr-defined]

    def parse_id(self, subject: str) -> Any:
        """Turn a token's ``sub`` into a primary key value without touching the database."""
        try:
            if self._id_type is int and _INT_ID.fullmatch(subject) is None:
                raise ValueError(subject)
            return self._id_type(subject)
        except ValueError:
            raise InvalidToken("The token's subject is not valid.", reason="bad_claims") from None

    def confirmed_values(self, session: AnySession, ids: Sequence[str]) -> dict[str, Any]:
        """The confirmation column of the users ``ids`` (outbox ``user_id`` strings) by id,
        read 500 at a time to stay under any database's limit of bound parameters."""
        keys, found = [self.parse_id(i) for i in ids], {}
        for start in range(0, len(keys), 500):
            chunk = self.id_column.in_(keys[start : start + 500])
            rows = session.execute(sa.select(self.id_column, self.confirmed_column).where(chunk))
            found.update({str(key): value for key, value in rows})
        return found

    def find(
        self, session: AnySession, address: str, *, lock: bool = False
    ) -> tuple[Any, Purpose | None]:
        """The user whose address (``signup``) or pending address (``change``) is ``address``
        (canonical), else ``(None, None)``, also when several accounts hold it as pending
        (rows from before it identified one account): a link then goes to nobody."""
        pairs = ((self.email_column, Purpose.SIGNUP), (self.pending_column, Purpose.CHANGE))
        for column, purpose in pairs:
            if column is None:
                continue
            query = sa.select(self.model).where(column == address).limit(2)
            users = session.execute(query.with_for_update() if lock else query).scalars().all()
            if users:
                return (users[0], purpose) if len(users) == 1 else (None, None)
        return None, None

    def unconfirmed(self) -> sa.ColumnElement[bool]:
        column = self.confirmed_column
        return column.is_not(True) if self.confirmed_is_boolean else column.is_(None)

    def waiting_ids(self, dialect: str) -> sa.Select[Any] | None:
        """The ids, as the outbox's ``user_id`` strings, of unconfirmed users with no pending
        address (those a reminder may go to); ``None`` for UUID keys outside PostgreSQL, whose
        SQL text is not ``str(uuid)``."""
        if self._id_type is uuid.UUID and dialect != "postgresql":
            return None
        query = sa.select(sa.cast(self.id_column, sa.String(64))).where(self.unconfirmed())
        if self.pending_column is not None:
            query = query.where(self.pending_column.is_(None))
        return query

    def confirm(
        self, session: AnySession, user_id: Any, address: str, now: datetime
    ) -> Purpose | None:
        """Confirm ``address`` for ``user_id`` with one conditional UPDATE, so concurrent calls
        confirm once: the user's address if it is ``address`` and unconfirmed (``signup``), else
        the pending address if it is ``address`` (``change``: it becomes the address); void other
        accounts' claims to it. ``None`` if neither matched; database errors propagate."""
        row = sa.update(self.model.__table__).where(self.id_column == user_id)
        confirmed = {self.confirmed_column: self.confirmed_value(now)}
        signup = row.where(self.email_column == address, self.unconfirmed()).values(confirmed)
        if session.execute(signup).rowcount == 1:  # type: ignore[attr-defined]
            purpose = Purpose.SIGNUP
        elif self.pending_column is None:
            return None
        else:
            change = row.where(self.pending_column == address).values(
                {self.email_column: address, self.pending_column: None, **confirmed}
            )
            if session.execute(change).rowcount != 1:  # type: ignore[attr-defined]
                return None
            purpose = Purpose.CHANGE
        self.void_pending_claims(session, address, user_id)
        return purpose
