"""Staff management in the back office: roles granted and taken from a page, a member's
sessions listed and ended, and the audit trail that records it, with its filters."""

from __future__ import annotations

import re

from sqlalchemy import insert

from shop.models import users
from tests.support import Shopper, back_office_user, page_text, session_user


def test_an_admin_grants_a_role_by_address_and_it_is_audited(app):
    admin = back_office_user(app, "admin", "boss@example.com")
    Shopper(app.test_client(), app).sign_up("clerk@example.com")
    granted = admin.post_form("/admin/staff", {"email": " Clerk@Example.com ", "role": "staff"})
    assert granted.status_code == 303
    listing = page_text(admin.client.get(granted.headers["Location"]))
    assert "clerk@example.com is now staff" in listing
    audit = page_text(admin.client.get("/admin/audit?action=staff.role&actor=boss@example.com"))
    assert "clerk@example.com" in audit and "customer → staff" in audit


def test_bad_grants_show_the_form_again_and_change_nothing(app):
    admin = back_office_user(app, "admin", "boss@example.com")
    Shopper(app.test_client(), app).sign_up("clerk@example.com")
    for form, status, message in (
        ({"email": "nobody@example.com", "role": "staff"}, 404, "no account"),
        ({"email": "not an address", "role": "staff"}, 400, "valid email"),
        ({"email": "clerk@example.com", "role": "emperor"}, 400, "A role is one of"),
        ({"email": "boss@example.com", "role": "staff"}, 400, "your own account"),
    ):
        answer = admin.post_form("/admin/staff", form)
        assert answer.status_code == status, (form, answer.status_code)
        assert message in page_text(answer)
        assert 'name="email"' in answer.get_data(as_text=True)  # the form, again
    assert "clerk@example.com" not in page_text(admin.client.get("/admin/audit"))


def test_an_admin_ends_a_staff_members_sessions(app):
    admin = back_office_user(app, "admin", "boss@example.com")
    clerk = back_office_user(app, "staff", "clerk@example.com")
    clerk_id = session_user(clerk)["id"]
    page = admin.client.get(f"/admin/staff/{clerk_id}")
    assert page.status_code == 200
    refs = re.findall(r'name="id" value="([^"]+)"', page.get_data(as_text=True))
    assert len(refs) == 1
    ended = admin.post_form(f"/admin/staff/{clerk_id}/sessions/end", {"id": refs[0]})
    assert ended.status_code == 303
    assert session_user(clerk) is None  # signed out on its next request
    assert clerk.client.get("/admin/").status_code == 404
    assert "staff.sessions_end" in page_text(admin.client.get("/admin/audit"))
    # Ending one that is gone, or a customer's, is a plain 404 with a message.
    again = admin.post_form(f"/admin/staff/{clerk_id}/sessions/end", {"id": refs[0]})
    assert again.status_code == 404
    customer = Shopper(app.test_client(), app)
    customer.register("carol@example.com")
    assert admin.client.get(f"/admin/staff/{session_user(customer)['id']}").status_code == 404


def test_end_all_sessions_and_take_the_role(app):
    admin = back_office_user(app, "admin", "boss@example.com")
    clerk = back_office_user(app, "staff", "clerk@example.com")
    clerk_phone = Shopper(app.test_client(), app)
    clerk_phone.login("clerk@example.com")
    clerk_id = session_user(clerk)["id"]
    assert admin.post_form(f"/admin/staff/{clerk_id}/sessions/end").status_code == 303
    assert session_user(clerk) is None and session_user(clerk_phone) is None
    taken = admin.post_form(f"/admin/staff/{clerk_id}/role", {"role": "customer"})
    assert taken.status_code == 303
    assert "clerk@example.com" not in page_text(admin.client.get("/admin/staff"))


def test_the_audit_trail_filters_and_pages(app):
    admin = back_office_user(app, "admin", "boss@example.com")
    with app.extensions["shop"].engines.primary.begin() as conn:
        conn.execute(
            insert(users), [{"email": f"c{n}@example.com", "password_hash": "x"} for n in range(55)]
        )
    for n in range(55):
        admin.post_form("/admin/staff", {"email": f"c{n}@example.com", "role": "staff"})
    first = admin.client.get("/admin/audit?action=staff.role")
    text = first.get_data(as_text=True)
    assert text.count("<tr>") - 1 == 50  # a header row and 50 entries
    older = re.search(r'href="(/admin/audit\?[^"]*before=\d+[^"]*)"', text)
    assert older
    second = page_text(admin.client.get(older.group(1).replace("&amp;", "&")))
    assert "c0@example.com" in second and "c54@example.com" not in second
    assert admin.client.get("/admin/audit?since=yesterday").status_code == 400
    none = page_text(admin.client.get("/admin/audit?entity=order"))
    assert "Nothing recorded that matches" in none
