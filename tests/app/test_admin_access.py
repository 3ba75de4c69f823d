"""Who may open the back office: every /admin route, walked from the route map so that a new
one cannot be forgotten, for an anonymous visitor, a customer, staff and an admin."""

from __future__ import annotations

import re

import pytest

from shop.web.errors import NO_PAGE
from tests.support import KETTLE, Shopper, back_office_user, page_text

# Values for the routes' arguments: things that exist in the test catalogue, or look real.
ARGUMENTS = {
    "id": "1",
    "user_id": "1",
    "product_id": str(KETTLE),
    "order_id": "1",
    "image_id": "1",  # none yet: each image route answers its own 404
    "category_id": "1",
}


def admin_requests(app) -> list[tuple[str, str, bool]]:
    """(method, path, admin only) for every rule under /admin."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        assert rule.endpoint.startswith("admin."), f"{rule.rule} is outside the guarded blueprint"
        path = re.sub(
            r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: ARGUMENTS.get(m.group(1), "x"), rule.rule
        )
        admin_only = getattr(app.view_functions[rule.endpoint], "admin_only", False)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, path, admin_only))
    # Ending user 1's sessions signs the walking browser (user 1) out: walk it last.
    return sorted(found, key=lambda request: "/sessions/end" in request[1])


def send(browser: Shopper, method: str, path: str):
    if method == "GET":
        return browser.client.get(path)
    return browser.client.open(path, method=method, data={"csrf_token": browser.csrf()})


def test_the_walk_covers_the_back_office(app):
    paths = {path for _, path, _ in admin_requests(app)}
    assert {"/admin/", "/admin/staff", "/admin/audit"} <= paths


def test_anonymous_visitors_and_customers_cannot_tell_the_back_office_exists(app, shopper):
    customer = Shopper(app.test_client(), app)
    customer.register("carol@example.com")
    for method, path, _ in admin_requests(app):
        for browser in (shopper, customer):
            unknown = send(browser, method, "/no-such-page" + path)
            answer = send(browser, method, path)
            assert answer.status_code == 404, (method, path, answer.status_code)
            assert page_text(answer) == page_text(unknown), (method, path)
            assert NO_PAGE in page_text(answer)


def test_without_a_token_an_outsider_still_gets_the_404(app, shopper):
    """The CSRF check comes after the role: a missing token must not reveal the route."""
    for method, path, _ in admin_requests(app):
        if method != "GET":
            assert shopper.client.open(path, method=method).status_code == 404


@pytest.mark.parametrize("role", ["staff", "admin"])
def test_staff_reach_their_pages_and_only_admins_reach_the_admins(app, role):
    browser = back_office_user(app, role)
    for method, path, admin_only in admin_requests(app):
        answer = send(browser, method, path)
        text = page_text(answer)
        assert answer.status_code < 500, (method, path, text[:500])
        assert NO_PAGE not in text, (method, path)
        if admin_only and role == "staff":
            assert answer.status_code == 403, (method, path)
            assert "Only an admin" in text
        else:
            assert answer.status_code != 403, (method, path, text[:500])


def test_a_state_change_without_the_token_is_refused_for_staff(app):
    browser = back_office_user(app, "admin")
    answer = browser.client.post("/admin/staff", data={"email": "x@example.com", "role": "staff"})
    assert answer.status_code == 403
    assert "CSRF" in page_text(answer)


def test_a_role_taken_away_stops_working_at_once(app):
    admin = back_office_user(app, "admin", "boss@example.com")
    clerk = back_office_user(app, "staff", "clerk@example.com")
    assert clerk.client.get("/admin/").status_code == 200
    taken = admin.post_form("/admin/staff", {"email": "clerk@example.com", "role": "customer"})
    assert taken.status_code == 303
    assert clerk.client.get("/admin/").status_code == 404
    assert "Back office" not in page_text(clerk.client.get("/cart"))


def test_the_password_is_asked_again_after_admin_reauth_seconds(make_app):
    app = make_app(admin_reauth_seconds=60)
    clock = {"now": 1_000_000.0}
    app.extensions["shop"].sessions.clock = lambda: clock["now"]
    Shopper(app.test_client(), app).sign_up("pat@example.com")
    browser = back_office_user(app, "admin", "sam@example.com")
    assert browser.client.get("/admin/").status_code == 200
    clock["now"] += 61
    stale = browser.client.get("/admin/?x=1")
    assert stale.status_code == 303
    assert stale.headers["Location"].startswith("/admin/reauth?next=")
    # A form sent now does nothing and asks for the password.
    sent = browser.post_form(
        "/admin/staff",
        {"email": "pat@example.com", "role": "staff"},
        headers={"Referer": "/admin/"},
    )
    assert sent.status_code == 401
    assert "not</strong> saved" in sent.get_data(as_text=True)
    assert "pat@example.com" not in page_text(browser.client.get("/admin/staff"))
    wrong = browser.post_form("/admin/reauth", {"password": "nope nope nope", "next": "/admin/"})
    assert wrong.status_code == 401
    right = browser.post_form(
        "/admin/reauth", {"password": "correct horse 42", "next": "https://evil.example/admin/"}
    )
    assert right.status_code == 303
    assert right.headers["Location"] == "/admin/"  # never elsewhere
    assert browser.client.get("/admin/").status_code == 200
    assert "pat@example.com" not in page_text(browser.client.get("/admin/staff"))


def test_user_grant_makes_the_first_admin_and_is_audited(app, shopper):
    shopper.register("first@example.com")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["user", "grant", "first@example.com", "admin"])
    assert result.exit_code == 0, result.output
    assert "first@example.com is now admin" in result.output
    shopper.login("first@example.com")
    page = shopper.client.get("/admin/audit")
    assert page.status_code == 200
    text = page_text(page)
    assert "command line" in text and "staff.role" in text and "customer → admin" in text
    missing = runner.invoke(args=["user", "grant", "nobody@example.com", "staff"])
    assert missing.exit_code != 0 and "no account" in missing.output
    wrong = runner.invoke(args=["user", "grant", "first@example.com", "king"])
    assert wrong.exit_code == 2


def test_the_navigation_marks_the_section_a_page_belongs_to(app):
    browser = back_office_user(app, "admin")
    for path, section in (
        ("/admin/products", "Products"),
        (f"/admin/products/{KETTLE}", "Products"),
        ("/admin/products/import", "Products"),
        ("/admin/orders", "Orders"),
        ("/admin/stock/adjustments", "Stock"),
        ("/admin/staff", "Staff"),
    ):
        text = browser.client.get(path).get_data(as_text=True)
        current = re.findall(r'<a href="[^"]*" aria-current="page">([^<]*)</a>', text)
        assert current == [section], (path, current)


def test_back_office_pages_do_not_show_the_shops_category_bar(app):
    browser = back_office_user(app, "staff")
    for path in ("/admin/products", "/admin/stock", "/admin/categories"):
        assert 'aria-label="Categories"' not in browser.client.get(path).get_data(as_text=True)
    assert 'aria-label="Categories"' in browser.client.get("/").get_data(as_text=True)
