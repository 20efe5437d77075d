"""The key page at fleet scale (issue 27 item 4): 10,000 keys selected by filter and exported,
activated, deactivated and deleted in one request each with the count shown first; Add says what
it made and exports exactly those keys; the export dialog names the servers devices will contact;
sorting and the first and last page; unit IDs typed in part; a clear filter error; a message after
every action naming what stayed as it was; the session's end; page titles; sticky headers."""

import json
import os
import re
import subprocess

from playwright.sync_api import expect

from conftest import ADMIN, AGENT, OUT, create, key_rows, sign_in, stub


def scan(server, path):
    """The keys of a key file as a device reads them (onboard-agent scan)."""
    result = subprocess.run(
        [AGENT, "--state-dir", os.path.join(server["folder"], "agent"), "--unit-id",
         "00E0C5540B8B", "scan", path, "--json"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["key_files"][0]


def export_to(page, name):
    """Clicks the export dialog's Export; the saved file's path."""
    with page.expect_download() as download_info:
        page.locator("#export-go").click()
    saved = os.path.join(OUT, name)
    download_info.value.save_as(saved)
    return saved


def posts_to(page, path):
    """A list that fills with the POSTs the page sends to `path`."""
    seen = []
    page.on("request", lambda request: request.method == "POST"
            and request.url.endswith(path) and seen.append(request.url))
    return seen


def test_ten_thousand_keys_matching_a_filter_are_selected_exported_and_changed_in_one_request(
        page, server):
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "10000",
         "--comment", "rollout-march")
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "32", "--comment", "spare")
    sign_in(page, server, ADMIN)
    expect(page.locator("#keys-range")).to_contain_text("of 10,032")
    page.locator("#filter-comment").fill("rollout")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 10,000 (page 1 of 100)")

    # The page's box selects the 100 in view, then offers every key the filter matches.
    page.get_by_label("Select all keys on this page").check()
    expect(page.locator("#keys-selection-text")).to_have_text("All 100 keys on this page are selected.")
    page.get_by_role("button", name="Select all 10,000 keys matching the filter").click()
    expect(page.locator("#keys-selection-text")).to_have_text(
        "All 10,000 keys matching the filter are selected.")
    expect(page.locator("#key-deactivate")).to_have_text("Deactivate (10,000)")
    expect(page.locator("#key-delete")).to_have_text("Delete (10,000)")

    # Export: the dialog says how many before anything is written; the file holds exactly those.
    page.get_by_role("button", name="Export", exact=True).click()
    dialog = page.locator("#export-dialog")
    expect(dialog.get_by_label("Every active key matching the filter (10,000)")).to_be_checked()
    expect(dialog.get_by_label("All active keys (10,032)")).to_be_visible()
    expect(page.locator("#export-count")).to_have_text("The file will hold 10,000 keys.")
    page.locator("#export-format").select_option("text")
    exports = posts_to(page, "/api/v1/keys/export")
    saved = export_to(page, "rollout-10000.txt")
    assert len(exports) == 1
    assert len(scan(server, saved)["keys"]) == 10000
    expect(page.locator("#keys-status-text")).to_contain_text("Exported 10,000 keys to icg.txt")

    # Deactivate all matching: asked first with the count, one request, and the outcome said.
    changes = posts_to(page, "/api/v1/keys/change")
    page.locator("#key-deactivate").click()
    expect(page.locator("#confirm-text")).to_have_text(
        "Deactivate all 10,000 keys matching the filter?")
    page.locator("#confirm-yes").click()
    expect(page.locator("#keys-status-text")).to_have_text("Deactivated 10,000 keys.")
    assert len(changes) == 1
    # Again: nothing changes, and the message says why.
    page.get_by_label("Select all keys on this page").check()
    page.get_by_role("button", name="Select all 10,000 keys matching the filter").click()
    page.locator("#key-deactivate").click()
    page.locator("#confirm-yes").click()
    expect(page.locator("#keys-status-text")).to_have_text(
        "Deactivated 0 of 10,000: 10,000 keys were already inactive.")
    # Nothing matching is active now: the server refuses an export of them rather than write
    # every other active key, and the dialog offers none of them.
    refused = page.evaluate("""async () => {
        const me = await (await fetch('/api/v1/session')).json();
        const response = await fetch('/api/v1/keys/export', {
            method: 'POST',
            headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf_token},
            body: JSON.stringify({format: 'text', filter: {comment: 'rollout'}}),
        });
        return [response.status, (await response.json()).code];
    }""")
    assert refused == [409, "conflict"]
    # Nothing matching is active now: the export offers none of them.
    page.get_by_role("button", name="Export", exact=True).click()
    expect(dialog.get_by_label("Every active key matching the filter (0)")).to_be_disabled()
    dialog.get_by_role("button", name="Cancel").click()

    # Delete all matching, confirming the count; the other keys stay.
    page.get_by_label("Select all keys on this page").check()
    page.get_by_role("button", name="Select all 10,000 keys matching the filter").click()
    page.locator("#key-delete").click()
    expect(page.locator("#confirm-text")).to_contain_text("Delete all 10,000 keys matching the filter?")
    page.locator("#confirm-yes").click()
    expect(page.locator("#keys-status-text")).to_have_text("Deleted 10,000 keys.")
    expect(page.locator("#keys-range")).to_have_text("No key matches the filter")
    assert len(changes) == 3
    page.get_by_role("button", name="Clear", exact=True).click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–32 of 32 (page 1 of 1)")


def test_add_says_what_it_created_and_exports_exactly_those_keys_to_the_servers_it_names(
        page, server):
    sign_in(page, server, ADMIN)
    dialog = create(page, "Create one time keys")
    dialog.get_by_label("Quantity").fill("5")
    dialog.get_by_role("button", name="Add").click()
    status = page.locator("#keys-status-text")
    expect(status).to_have_text(re.compile(r"^Created 5 keys \(IDs (\d+)–(\d+)\)\.$"))
    first, last = map(int, re.search(r"IDs (\d+)–(\d+)", status.inner_text()).groups())
    assert last - first == 4
    page.get_by_role("button", name="Export these keys").click()
    export = page.locator("#export-dialog")
    expect(export.get_by_label(f"The 5 new keys (IDs {first}–{last})")).to_be_checked()
    expect(page.locator("#export-count")).to_have_text("The file will hold 5 keys.")
    # Prefilled with the port this server listens on, never the default port, and said.
    port = server["url"].rsplit(":", 1)[1]
    servers = page.locator("#export-servers")
    expect(servers).to_have_value(re.compile(rf"^[^\s:]+:{port}$"))
    named = servers.input_value()
    expect(page.locator("#export-contact")).to_have_text(f"Devices will contact: {named}")
    expect(page.locator("#export-servers-note")).to_contain_text("sets no public_host")
    # Typing another list changes what the dialog says devices will contact.
    servers.fill("ums.example.com:9443\n10.0.0.5")
    expect(page.locator("#export-contact")).to_have_text(
        "Devices will contact: ums.example.com:9443, 10.0.0.5")
    servers.fill(named)
    page.locator("#export-format").select_option("xml")
    file = scan(server, export_to(page, "new-keys.xml"))
    assert len(file["keys"]) == 5
    assert file["servers"] == [named]
    # Emptied, the dialog refuses rather than write a file devices cannot use.
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("#export-contact")).to_have_text(f"Devices will contact: {named}")
    servers.fill("")
    expect(page.locator("#export-contact")).to_contain_text("Name at least one server")
    page.locator("#export-go").click()
    expect(page.locator("#export-error")).to_contain_text("name at least one server")
    export.get_by_role("button", name="Cancel").click()


def test_keys_sort_by_id_created_usage_date_and_status_both_ways_with_first_and_last_page(
        page, server):
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "250", "--comment", "sort")
    sign_in(page, server, ADMIN)
    page.locator("#filter-comment").fill("sort")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 250 (page 1 of 3)")
    ids = page.locator("#keys-table tbody tr td:nth-child(2)")
    smallest = int(ids.first.inner_text())
    page.get_by_role("button", name="Last", exact=True).click()
    expect(page.locator("#keys-range")).to_have_text("Keys 201–250 of 250 (page 3 of 3)")
    expect(ids.last).to_have_text(str(smallest + 249))
    expect(page.get_by_role("button", name="Next", exact=True)).to_be_disabled()
    page.get_by_role("button", name="First", exact=True).click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 250 (page 1 of 3)")

    id_header = page.locator("#keys-table th[data-sort='id']")
    expect(id_header).to_have_attribute("aria-sort", "ascending")
    id_header.get_by_role("button").click()
    expect(id_header).to_have_attribute("aria-sort", "descending")
    expect(ids.first).to_have_text(str(smallest + 249))
    # Deactivate the newest key: by status ascending, active keys come first; descending, not.
    page.get_by_label(f"Select key {smallest + 249}", exact=True).check()
    page.locator("#key-deactivate").click()
    expect(page.locator("#keys-status-text")).to_have_text("Deactivated 1 key.")
    status_header = page.locator("#keys-table th[data-sort='status']")
    status_header.get_by_role("button").click()
    expect(status_header).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#keys-table tbody tr").first.locator("td.status")).to_have_text("Active")
    status_header.get_by_role("button").click()
    expect(page.locator("#keys-table tbody tr").first.locator("td.status")).to_have_text("Inactive")
    for column in ["created", "usage_date"]:
        header = page.locator(f"#keys-table th[data-sort='{column}']")
        for order in ["ascending", "descending"]:
            with page.expect_response(lambda r: f"sort={column}" in r.url) as answer:
                header.get_by_role("button").click()
            assert answer.value.ok
            assert ("order=asc" if order == "ascending" else "order=desc") in answer.value.url
            expect(header).to_have_attribute("aria-sort", order)
    expect(page.locator("#keys-error")).to_have_text("")
    # The Created column shows when each key was made.
    expect(page.locator("#keys-table thead th", has_text="Created")).to_be_visible()
    expect(page.locator("#keys-table tbody tr").first.locator("td").nth(5)).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))


def test_a_unit_id_typed_in_part_finds_its_keys_and_a_bad_one_says_why_and_clears_the_rows(
        page, server):
    stub(server["data_dir"], "keys", "create", "device-bound", "--unit-id", "00E0C5000001",
         "--unit-id", "00E0C5000002", "--unit-id", "00E0C5000003", "--unit-id", "00E0C6000001")
    sign_in(page, server, ADMIN)
    page.locator("#filter-unit").fill("00:e0:c5")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(3)
    expect(page.locator("#keys-range")).to_have_text("Keys 1–3 of 3 (page 1 of 1)")
    page.locator("#filter-unit").fill("00E0C6")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(1)
    page.locator("#filter-unit").fill("00E0%")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-error")).to_contain_text("unit_id: '%' cannot be in a unit ID")
    expect(page.locator("#keys-error")).not_to_contain_text("deserialize")
    expect(key_rows(page)).to_have_count(0)
    expect(page.locator("#keys-range")).to_have_text("")


def test_every_action_says_what_it_did_naming_keys_left_as_they_were(page, server):
    sign_in(page, server, ADMIN)
    dialog = create(page, "Create one time keys")
    dialog.get_by_label("Quantity").fill("3")
    dialog.get_by_label("Comment").fill("noop")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#keys-status-text")).to_contain_text("Created 3 keys")
    page.locator("#filter-comment").fill("noop")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(3)
    page.get_by_label("Select all keys on this page").check()
    expect(page.locator("#key-activate")).to_have_text("Activate (3)")
    page.locator("#key-activate").click()
    expect(page.locator("#keys-status-text")).to_have_text(
        "Activated 0 of 3: 3 keys were already active.")
    first = page.locator("#keys-table tbody tr").first.get_attribute("data-id")
    page.get_by_label(f"Select key {first}", exact=True).check()
    page.locator("#key-deactivate").click()
    expect(page.locator("#keys-status-text")).to_have_text("Deactivated 1 key.")
    page.get_by_label("Select all keys on this page").check()
    page.locator("#key-activate").click()
    expect(page.locator("#keys-status-text")).to_have_text(
        "Activated 1 of 3: 2 keys were already active.")
    page.get_by_label(f"Select key {first}", exact=True).check()
    page.get_by_role("button", name="Edit", exact=True).click()
    page.locator("#edit-comment").fill("noop edited")
    page.locator("#edit-form").get_by_role("button", name="Save").click()
    expect(page.locator("#keys-status-text")).to_have_text(f"Saved the comment of key {first}.")


def test_a_session_that_ends_says_so_and_signing_in_returns_to_the_page(page, server):
    sign_in(page, server, ADMIN)
    page.get_by_role("link", name="Audit").click()
    expect(page).to_have_title("Audit · UMS stub")
    # The session ends behind the page's back (signed out elsewhere).
    page.evaluate("""async () => {
        const me = await (await fetch('/api/v1/session')).json();
        await fetch('/api/v1/session', {method: 'DELETE', headers: {'x-csrf-token': me.csrf_token}});
    }""")
    page.get_by_role("button", name="Filter").click()
    ended = page.locator("#session-dialog")
    expect(ended).to_be_visible()
    expect(ended).to_contain_text("Your session ended, sign in again.")
    page.get_by_role("button", name="Sign in again").click()
    page.wait_for_url("**/?ended=1&return=%23audit")
    expect(page.locator("#signin-ended")).to_be_visible()
    page.get_by_label("Name").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app/#audit")
    expect(page.locator("#page-audit")).to_be_visible()
    # Only a page of the app is a place to return to.
    page.goto(server["url"] + "/?return=https://example.com/")
    page.wait_for_url("**/app/")


def test_each_page_has_its_own_title(page, server):
    sign_in(page, server, ADMIN)
    for link, title in [("Devices", "Devices"), ("UMS ID", "UMS ID"), ("Audit", "Audit"),
                        ("First-Authentication Keys", "First-Authentication Keys")]:
        page.get_by_role("link", name=link).click()
        expect(page).to_have_title(f"{title} · UMS stub")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_title("Sign in · UMS stub")


def test_the_key_table_headers_stay_in_view_while_a_page_of_100_scrolls(page, server):
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "100")
    sign_in(page, server, ADMIN)
    expect(key_rows(page)).to_have_count(100)
    offset = page.evaluate("""() => {
        const wrap = document.querySelector('#page-keys .table-wrap');
        wrap.scrollTop = 2000;
        const header = document.querySelector('#keys-table thead th:nth-child(2)');
        return [wrap.scrollTop, header.getBoundingClientRect().top - wrap.getBoundingClientRect().top];
    }""")
    assert offset[0] > 1000, "the table scrolled"
    assert abs(offset[1]) <= 2, f"the header moved {offset[1]} px away from the top"
