"""Who runs the shop: an account's role (customer, staff, admin) and who may grant one.

Staff use the back office (/admin); admins also manage staff (roles, sessions) and read the
audit trail. The role is read from the primary on every back-office request, so a role taken
away stops working at once, on every instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from . import audit
from .accounts import normalise_email
from .errors import InvalidInput, NotFound
from .models import users

CUSTOMER, STAFF, ADMIN = "customer", "staff", "admin"
ROLES = (CUSTOMER, STAFF, ADMIN)
BACK_OFFICE_ROLES = frozenset({STAFF, ADMIN})


@dataclass(frozen=True)
class Member:
    """An account as the staff page lists it."""

    id: int
    email: str
    role: str
    created_at: datetime


def role_of(conn: Connection, user_id: int) -> str | None:
    """The account's role, or None if there is no such account."""
    return conn.execute(select(users.c.role).where(users.c.id == user_id)).scalar()


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"A role is one of: {', '.join(ROLES)}.", field="role")
    return str(role)


def grant(
    conn: Connection,
    actor: audit.Actor,
    *,
    role: object,
    at: datetime,
    user_id: int | None = None,
    email: object = None,
) -> Member:
    """Give an account (by id or address) a role, recorded in the audit trail. An admin cannot
    take the admin role from their own account (the shop would risk having none)."""
    new_role = check_role(role)
    where = (
        users.c.id == user_id if user_id is not None else users.c.email == normalise_email(email)
    )
    row = conn.execute(
        select(users.c.id, users.c.email, users.c.role, users.c.created_at)
        .where(where)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound("There is no account with that address.", field="email")
    if actor.id == row.id and row.role == ADMIN and new_role != ADMIN:
        raise InvalidInput(
            "You cannot take the admin role from your own account; ask another admin.",
            field="role",
        )
    if row.role != new_role:
        conn.execute(update(users).where(users.c.id == row.id).values(role=new_role))
        audit.record(
            conn,
            actor,
            "staff.role",
            entity="user",
            entity_id=row.id,
            before={"role": row.role, "email": row.email},
            after={"role": new_role, "email": row.email},
            at=at,
        )
    return Member(row.id, row.email, new_role, row.created_at)


def members(engine: Engine) -> list[Member]:
    """Every account with a back-office role, admins first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(users.c.id, users.c.email, users.c.role, users.c.created_at)
            .where(users.c.role.in_(BACK_OFFICE_ROLES))
            .order_by(users.c.role, users.c.email)
        ).all()
    return [Member(row.id, row.email, row.role, row.created_at) for row in rows]


def member(engine: Engine, user_id: int) -> Member:
    with engine.connect() as conn:
        row = conn.execute(
            select(users.c.id, users.c.email, users.c.role, users.c.created_at).where(
                users.c.id == user_id
            )
        ).first()
    if row is None:
        raise NotFound(f"There is no account {user_id}.")
    return Member(row.id, row.email, row.role, row.created_at)
