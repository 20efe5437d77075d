"""Every page at 375 px (a phone): no sideways scroll of the page, tables as cards, screenshots in
ONBOARD_WEB_OUT/narrow-375/; and an accessibility scan of every page (and the dialogs) with
axe-core's default rules, as the PyPI package axe-playwright-python bundles it: no serious or
critical finding."""

import os

from playwright.sync_api import expect

from conftest import ADMIN, OUT, axe_violations, create, key_rows, sign_in, stub

NARROW = os.path.join(OUT, "narrow-375")


def fill_server(server):
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "150",
         "--comment", "a comment long enough to wrap on a narrow screen")
    stub(server["data_dir"], "keys", "create", "device-bound", "--unit-id", "00E0C5540B8B")


def pages(page):
    """Visits each page of the app; yields its name once it has drawn."""
    page.get_by_role("link", name="First-Authentication Keys").click()
    expect(key_rows(page).first).to_be_visible()
    yield "keys"
    page.get_by_role("link", name="Devices").click()
    expect(page.locator("#devices-range")).not_to_be_empty()
    yield "devices"
    page.get_by_role("link", name="UMS ID").click()
    expect(page.locator("#servers-table tbody tr").first).to_be_visible()
    yield "ums-id"
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("#audit-table tbody tr").first).to_be_visible()
    yield "audit"


def overflow(page):
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def test_every_page_fits_375_px_without_sideways_scroll(browser, server):
    fill_server(server)
    os.makedirs(NARROW, exist_ok=True)
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 375, "height": 740},
                                  device_scale_factor=1, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(server["url"] + "/")
        assert overflow(page) <= 0, "the sign-in page scrolls sideways"
        page.screenshot(path=os.path.join(NARROW, "sign-in.png"), full_page=True)
        sign_in(page, server, ADMIN)
        for name in pages(page):
            assert overflow(page) <= 0, f"the {name} page scrolls sideways at 375 px"
            page.screenshot(path=os.path.join(NARROW, f"{name}.png"), full_page=True)
            page.screenshot(path=os.path.join(NARROW, f"{name}-first-screen.png"))
        # The key table as cards: each value beside its column's name; select and sort still there.
        page.get_by_role("link", name="First-Authentication Keys").click()
        first = key_rows(page).first
        expect(first.locator("td[data-label='Status']")).to_be_visible()
        assert first.bounding_box()["width"] <= 375
        expect(page.get_by_label("Select all keys on this page")).to_be_visible()
        expect(page.locator("#keys-table th[data-sort='created'] button")).to_be_visible()
        create(page, "Create one time keys")
        assert overflow(page) <= 0, "the Create dialog scrolls sideways"
        page.screenshot(path=os.path.join(NARROW, "create-dialog.png"))
    finally:
        context.close()


def test_no_page_has_a_serious_or_critical_accessibility_finding(page, server):
    found = {}
    page.goto(server["url"] + "/")
    found["sign-in"] = axe_violations(page)
    sign_in(page, server, ADMIN)
    for name in pages(page):
        found[name] = axe_violations(page)
    # The dialogs, open.
    page.get_by_role("link", name="First-Authentication Keys").click()
    expect(key_rows(page).first).to_be_visible()
    create(page, "Create one time keys")
    found["create dialog"] = axe_violations(page)
    page.locator("#create-dialog").get_by_role("button", name="Cancel").click()
    page.get_by_label("Select all keys on this page").check()
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("#export-contact")).to_contain_text("Devices will contact")
    found["export dialog"] = axe_violations(page)
    serious = {name: issues for name, issues in found.items() if issues}
    assert not serious, serious
