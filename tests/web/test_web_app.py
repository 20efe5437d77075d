"""The Web App in a real browser: keys, the UMS ID, devices and audit pages, sign-in and the
Content Security Policy. Fixtures in conftest.py; the fleet-scale key page, the devices page, the
Distributed UMS page and the accessibility and narrow-window checks in their own files."""

import json
import os
import subprocess

from playwright.sync_api import expect

from conftest import ADMIN, AGENT, OUT, READER, WRITER, create, key_rows, sign_in, stub

def test_keys_page_creates_shows_filters_exports_and_deletes(page, server):
    sign_in(page, server, ADMIN)
    expect(page.locator("#keys-range")).to_have_text("No keys")

    dialog = create(page, "Create one time keys")
    dialog.get_by_label("Quantity").fill("5")
    dialog.get_by_label("Comment").fill("lab")
    dialog.get_by_role("button", name="Add").click()
    expect(key_rows(page)).to_have_count(5)

    # A bad typed unit ID beside a CSV file: refused, and nothing of either is created.
    dialog = create(page, "Create one time keys for devices")
    csv = os.path.join(server["folder"], "units.csv")
    with open(csv, "w", encoding="utf-8") as file:
        file.write("Unit ID\n00:E0:C5:54:0B:8B\n")
    page.set_input_files("#create-csv", csv)
    dialog.get_by_label("Unit IDs, one per line").fill("not-a-unit")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#create-error")).to_contain_text("unit ID")
    expect(key_rows(page)).to_have_count(5)
    # The CSV file and a typed unit ID together, in one request.
    dialog.get_by_label("Unit IDs, one per line").fill("00E0C5000002")
    dialog.get_by_role("button", name="Add").click()
    expect(key_rows(page)).to_have_count(7)
    expect(page.locator("#keys-table td", has_text="00E0C5540B8B")).to_have_count(1)

    dialog = create(page, "Create mass-deployment key")
    dialog.get_by_label("Generate random mass key").uncheck()
    dialog.get_by_label("Key", exact=True).fill("Rollout-2026-Berlin-Lab")
    dialog.get_by_role("button", name="Add").click()
    expect(key_rows(page)).to_have_count(8)
    # The same typed key again is refused, and the dialog says why.
    dialog = create(page, "Create mass-deployment key")
    dialog.get_by_label("Generate random mass key").uncheck()
    dialog.get_by_label("Key", exact=True).fill("Rollout-2026-Berlin-Lab")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#create-error")).to_contain_text("Another key already has this key value")
    dialog.get_by_role("button", name="Cancel").click()

    # Masked, then shown, then hidden again.
    keys = page.locator("#keys-table td.key")
    expect(keys.first).to_contain_text("*")
    page.get_by_role("button", name="Show keys").click()
    expect(page.get_by_role("button", name="Hide keys")).to_be_visible()
    expect(page.locator("#keys-table td.key", has_text="Rollout-2026-Berlin-Lab")).to_have_count(1)
    page.get_by_role("button", name="Hide keys").click()
    expect(page.locator("#keys-table td.key", has_text="Rollout-2026-Berlin-Lab")).to_have_count(0)

    # Deactivate key 1 and see its status; filter on it.
    page.get_by_label("Select key 1", exact=True).check()
    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator("#keys-table tr[data-id='1'] td.status")).to_have_text("Inactive")
    page.locator("#filter-status").select_option("inactive")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    page.locator("#filter-unit").fill("00-E0-C5-00-00-02")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    page.locator("#filter-type").select_option("device-bound")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(2)
    page.get_by_role("button", name="Clear").click()
    page.locator("#filter-comment").fill("LAB")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(5)
    page.get_by_role("button", name="Clear").click()
    expect(key_rows(page)).to_have_count(8)

    # Edit a comment; activate key 1 again and deactivate it once more.
    page.get_by_label("Select key 3", exact=True).check()
    page.get_by_role("button", name="Edit", exact=True).click()
    page.locator("#edit-comment").fill("spare")
    page.locator("#edit-form").get_by_role("button", name="Save").click()
    expect(page.locator("#keys-table tr[data-id='3'] td.comment")).to_have_text("spare")
    page.get_by_label("Select key 1", exact=True).check()
    page.locator("#key-activate").click()
    expect(page.locator("#keys-table tr[data-id='1'] td.status")).to_have_text("Active")
    page.get_by_label("Select key 1", exact=True).check()
    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator("#keys-table tr[data-id='1'] td.status")).to_have_text("Inactive")

    # Export every active key as XML and read the file as a device would.
    page.get_by_role("button", name="Export", exact=True).click()
    export = page.locator("#export-dialog")
    export.get_by_label("All active keys").check()
    page.locator("#export-format").select_option("xml")
    export.get_by_label("Servers devices contact").fill("ums.example.com:9443")
    with page.expect_download() as download_info:
        page.locator("#export-form").get_by_role("button", name="Export").click()
    download = download_info.value
    assert download.suggested_filename == "icg.xml"
    saved = os.path.join(OUT, "icg.xml")
    download.save_as(saved)
    scan = subprocess.run(
        [AGENT, "--state-dir", os.path.join(server["folder"], "agent"), "--unit-id",
         "00E0C5540B8B", "scan", saved, "--json"],
        capture_output=True, text=True, check=False,
    )
    assert scan.returncode == 0, scan.stderr
    report = json.loads(scan.stdout)
    file = report["key_files"][0]
    assert file["format"] == "xml"
    assert file["servers"] == ["ums.example.com:9443"]
    assert len(file["keys"]) == 7, "key 1 is inactive"
    fingerprint = json.loads(stub(server["data_dir"], "ums-id", "show", "--json"))["fingerprint"]
    assert file["fingerprint"] == fingerprint

    # Delete key 2, confirming.
    page.get_by_label("Select key 2", exact=True).check()
    page.locator("#key-delete").click()
    expect(page.locator("#confirm-text")).to_contain_text("Delete 1 key (2)")
    page.locator("#confirm-yes").click()
    expect(key_rows(page)).to_have_count(7)
    expect(page.locator("#keys-table tr[data-id='2']")).to_have_count(0)
    page.screenshot(path=os.path.join(OUT, "keys-page.png"))


def test_a_typed_mass_key_below_the_floor_is_refused_saying_why(page, server):
    sign_in(page, server, ADMIN)
    posted = []
    page.on("request", lambda request: request.method == "POST"
            and request.url.endswith("/api/v1/keys") and posted.append(request.url))
    dialog = create(page, "Create mass-deployment key")
    dialog.get_by_label("Generate random mass key").uncheck()
    # The rule is shown next to the field.
    expect(page.locator("#create-password-rule")).to_contain_text("At least 16 characters")
    # Too short: refused before anything is sent.
    dialog.get_by_label("Key", exact=True).fill("password1234")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#create-error")).to_contain_text("at least 16 characters")
    assert posted == []
    # Long enough but a common pattern: the server's reason, without the value.
    dialog.get_by_label("Key", exact=True).fill("password12345678")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#create-error")).to_contain_text("too guessable")
    expect(page.locator("#create-error")).not_to_contain_text("password12345678")
    assert len(posted) == 1
    dialog.get_by_role("button", name="Cancel").click()


def test_a_reader_sees_no_write_control_and_a_forced_write_is_refused(page, server):
    sign_in(page, server, READER)
    expect(page.locator("#keys-table tbody tr").first).to_be_visible()
    for name in ["Create", "Edit", "Delete", "Activate", "Deactivate", "Export", "Show keys"]:
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    for page_name in ["Devices", "UMS ID", "Audit"]:
        expect(page.get_by_role("link", name=page_name)).to_have_count(0)
    status = page.evaluate(
        """async () => {
            const me = await (await fetch('/api/v1/session')).json();
            const response = await fetch('/api/v1/keys', {
                method: 'POST',
                headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf_token},
                body: JSON.stringify({type: 'one-time', quantity: 1}),
            });
            return [response.status, (await response.json()).code];
        }"""
    )
    assert status == [403, "forbidden"]


def test_export_is_offered_only_with_keys_export_and_refused_without(page, server):
    # An export is a reveal to a file: keys:write alone offers no Export, and the server refuses one.
    sign_in(page, server, WRITER)
    expect(page.get_by_role("button", name="Create", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Export", exact=True)).to_have_count(0)
    status = page.evaluate(
        """async () => {
            const me = await (await fetch('/api/v1/session')).json();
            const response = await fetch('/api/v1/keys/export', {
                method: 'POST',
                headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf_token},
                body: JSON.stringify({format: 'text'}),
            });
            return [response.status, (await response.json()).code];
        }"""
    )
    assert status == [403, "forbidden"]


def test_ums_id_page_shows_the_fingerprint_the_command_line_shows(page, server):
    shown = json.loads(stub(server["data_dir"], "ums-id", "show", "--json"))
    sign_in(page, server, ADMIN)
    page.get_by_role("link", name="UMS ID").click()
    expect(page.locator("#ums-id-fingerprint")).to_have_text(shown["fingerprint"])
    expect(page.locator("#ums-id-short")).to_have_text(shown["short"])
    expect(page.locator("#ums-id-token")).to_have_text(shown["communication_token"])
    expect(page.locator("#ums-id-parts li")).to_have_text(shown["parts"])
    row = page.locator("#servers-table tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("Running")
    expect(row.locator("td").nth(2)).to_have_text("Main UMS ID")
    expect(row.locator("td").nth(4)).to_have_text(shown["fingerprint"])
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export Main UMS ID").click()
    download = download_info.value
    assert download.suggested_filename == "ums-id.crt"
    saved = os.path.join(OUT, "ums-id.crt")
    download.save_as(saved)
    with open(saved, encoding="ascii") as file:
        assert file.read().startswith("-----BEGIN CERTIFICATE-----")
    page.screenshot(path=os.path.join(OUT, "ums-id-page.png"))


def test_devices_and_audit_pages_and_sign_out(page, server):
    sign_in(page, server, ADMIN)
    page.get_by_role("link", name="Devices").click()
    expect(page.locator("#devices-range")).to_have_text("No devices")
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("#audit-table tbody tr").first).to_be_visible()
    # Newest first: this sign-in is the first line.
    first = page.locator("#audit-table tbody tr").first
    expect(first.locator("td").nth(2)).to_have_text("session.login")
    # The reader's sign-in is in the log until the filter keeps only the admin's lines.
    actors = page.locator("#audit-table tbody td:nth-child(4)")
    expect(actors.filter(has_text="reader")).not_to_have_count(0)
    page.locator("#audit-actor").fill("admin")
    page.locator("#audit-outcome").fill("ok")
    page.get_by_role("button", name="Filter").click()
    expect(actors.filter(has_text="reader")).to_have_count(0)
    events = page.locator("#audit-table tbody td:nth-child(3)")
    expect(events.filter(has_text="keys.create").first).to_be_visible()
    expect(events.filter(has_text="keys.export").first).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(server["url"] + "/")
    # The session is gone: the app sends the browser back to sign in, to return to its page.
    page.goto(server["url"] + "/app/#audit")
    page.wait_for_url(server["url"] + "/?return=%23audit")


def test_a_wrong_password_is_refused_on_the_sign_in_page(page, server):
    page.goto(server["url"] + "/")
    page.get_by_label("Name").fill(ADMIN[0])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("The name or the password is wrong.")


def test_pages_carry_a_content_security_policy_of_self(page, server):
    for path in ["/", "/app/", "/app/app.js"]:
        response = page.request.get(server["url"] + path)
        assert response.ok, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy, path
        assert response.headers["x-content-type-options"] == "nosniff", path


def test_the_keys_page_pages_through_100000_keys(page, server):
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "100000",
         "--comment", "bulk")
    sign_in(page, server, ADMIN)
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 100,007 (page 1 of 1,001)")
    expect(key_rows(page)).to_have_count(100)
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#keys-range")).to_have_text("Keys 101–200 of 100,007 (page 2 of 1,001)")
    expect(page.get_by_role("button", name="Previous")).to_be_enabled()
    page.locator("#filter-comment").fill("bulk")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 100,000 (page 1 of 1,000)")
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
