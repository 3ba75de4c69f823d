"""Staff: who has a back-office role, granting and taking it, and their sessions (admins)."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from ... import audit, staff
from ...errors import FormError, NotFound
from ..account_sessions import describe_device
from ..context import services
from ..errors import form_error
from . import actor, add_section, admin_only, bp, now

add_section("admin.staff_list", "Staff", order=80, admin=True)


def _staff_page(status: int = 200, **context):
    engine = services().engines.primary
    context.setdefault("error", None)
    context.setdefault("email", "")
    body = render_template(
        "admin/staff.html", members=staff.members(engine), roles=staff.ROLES, **context
    )
    return body, status


@bp.get("/staff")
@admin_only
def staff_list():
    return _staff_page(done=request.args.get("done"))


@bp.post("/staff")
@admin_only
def staff_grant():
    """Give an account (by its address) a role: how a customer becomes staff."""
    email, role = request.form.get("email", ""), request.form.get("role", "")
    try:
        with services().engines.primary.begin() as conn:
            member = staff.grant(conn, actor(), email=email, role=role, at=now())
    except FormError as exc:
        body, _ = _staff_page(error=exc, email=email)
        return body, exc.status
    return redirect(url_for("admin.staff_list", done=f"{member.email} is now {member.role}"), 303)


def _member(user_id: int) -> staff.Member:
    member = staff.member(services().engines.primary, user_id)
    if member.role not in staff.BACK_OFFICE_ROLES:
        raise NotFound(f"Account {user_id} is not on the staff.")
    return member


@bp.get("/staff/<id:user_id>")
@admin_only
def staff_member(user_id: int):
    member = _member(user_id)
    sessions = [
        {
            "id": s.ref,
            "device": describe_device(s.user_agent),
            "created": int(s.created),
            "last_seen": int(s.last_seen),
        }
        for s in services().sessions.user_sessions(member.id)
    ]
    return render_template(
        "admin/staff_member.html",
        member=member,
        sessions=sessions,
        roles=staff.ROLES,
        error=None,
        done=request.args.get("done"),
    )


@bp.post("/staff/<id:user_id>/role")
@admin_only
def staff_role(user_id: int):
    _member(user_id)
    try:
        with services().engines.primary.begin() as conn:
            member = staff.grant(
                conn, actor(), user_id=user_id, role=request.form.get("role"), at=now()
            )
    except FormError as exc:
        return form_error(
            "admin/staff_member.html",
            exc,
            member=_member(user_id),
            sessions=[],
            roles=staff.ROLES,
            done=None,
        )
    if member.role not in staff.BACK_OFFICE_ROLES:
        return redirect(url_for("admin.staff_list", done=f"{member.email} is now a customer"), 303)
    return redirect(url_for("admin.staff_member", user_id=user_id, done="Role changed"), 303)


@bp.post("/staff/<id:user_id>/sessions/end")
@admin_only
def staff_end_sessions(user_id: int):
    """End one of the member's sessions (``id``), or all of them (no ``id``)."""
    member = _member(user_id)
    store = services().sessions
    ref = request.form.get("id", "")
    if ref:
        if not store.end_user_session(member.id, ref):
            raise NotFound("There is no such session (it may have ended already).")
        ended = 1
    else:
        ended = store.end_user_sessions(member.id)
    with services().engines.primary.begin() as conn:
        audit.record(
            conn,
            actor(),
            "staff.sessions_end",
            entity="user",
            entity_id=member.id,
            before={"email": member.email},
            after={"sessions_ended": ended, "session": ref or "all"},
            at=now(),
        )
    return redirect(
        url_for("admin.staff_member", user_id=user_id, done=f"{ended} session(s) ended"), 303
    )
