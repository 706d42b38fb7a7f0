"""CatLoader's tables: users (with the extension's mixin) and their cat pictures."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column, relationship

from flask_confirm_mail import ConfirmableMixin

db = SQLAlchemy()


def utcnow() -> datetime:
    """The current time as naive UTC, the way the extension stores it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(UserMixin, ConfirmableMixin, db.Model):  # type: ignore[name-defined,misc]
    """An account: ``email``, ``email_confirmed_at`` and ``pending_email`` come from the mixin."""

    __tablename__ = "catloader_users"
    # SQLite reuses the largest deleted id otherwise: a pruned account's session cookie
    # would open the next newcomer's profile.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pictures: Mapped[list[Picture]] = relationship(
        back_populates="owner", cascade="all, delete-orphan", order_by="Picture.id.desc()"
    )


class Picture(db.Model):  # type: ignore[name-defined,misc]
    """One uploaded picture; the file is ``stored_name`` in the upload folder."""

    __tablename__ = "catloader_pictures"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("catloader_users.id"), index=True)
    stored_name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    original_name: Mapped[str] = mapped_column(sa.String(120))
    media_type: Mapped[str] = mapped_column(sa.String(32))
    size: Mapped[int]
    width: Mapped[int]
    height: Mapped[int]
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner: Mapped[User] = relationship(back_populates="pictures")
