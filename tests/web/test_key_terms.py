"""Keys with a lifetime, a folder and a usage limit in the Web App (issue 27 items 1-3, 5): 500 keys
that expire in 30 days for /Sites/Berlin are created, checked in the export dialog (each server as
the server reaches it), exported exactly, and the device enrolled with one shows its folder on the
devices page; an expired key says so and is not offered for export; a mass key takes a usage limit
and a date; a field the API refuses is named in the dialog, with what was typed kept."""

import datetime
import os
import re
import subprocess

from playwright.sync_api import expect

from conftest import ADMIN, axe_violations, create, key_rows, sign_in, stub
from test_keys_fleet import export_to, posts_to, scan

FLEET_SIM = os.environ["FLEET_SIM_BIN"]


def utc_day(days):
    """The UTC date `days` from now, as a date field takes it (YYYY-MM-DD)."""
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)).strftime(
        "%Y-%m-%d")


def revealed(page, ids):
    """The clear values of keys `ids`, as the API reveals them to the signed-in account."""
    return page.evaluate("""async (ids) => {
        const me = await (await fetch('/api/v1/session')).json();
        const response = await fetch('/api/v1/keys/reveal', {
            method: 'POST',
            headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf_token},
            body: JSON.stringify({ids}),
        });
        return (await response.json()).map((key) => key.key);
    }""", ids)


def test_500_keys_expiring_in_30_days_for_a_folder_are_checked_exported_and_land_devices_there(
        page, server):
    port = server["url"].rsplit(":", 1)[1]
    sign_in(page, server, ADMIN)
    dialog = create(page, "Create one time keys")
    dialog.get_by_label("Quantity").fill("500")
    dialog.get_by_label("Expires").select_option(label="In 30 days")
    dialog.get_by_label("Comment").fill("berlin rollout")
    # A folder that is not a path: the API's refusal names the field, the dialog stays with
    # everything typed, and the focus is on the field.
    folder = dialog.get_by_label("Folder (optional)")
    folder.fill("Sites/Berlin")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#create-error")).to_contain_text(
        "folder: \"Sites/Berlin\" is not a folder")
    expect(page.locator("#create-error")).not_to_contain_text("body:")
    expect(dialog).to_be_visible()
    expect(folder).to_have_attribute("aria-invalid", "true")
    expect(folder).to_be_focused()
    expect(folder).to_have_value("Sites/Berlin")
    expect(dialog.get_by_label("Quantity")).to_have_value("500")
    page.screenshot(path=os.path.join(server["out"], "create-refused.png"))
    expect(dialog.get_by_label("Expires")).to_have_value("30")
    folder.fill("/Sites/Berlin")
    creations = posts_to(page, "/api/v1/keys")
    dialog.get_by_role("button", name="Add").click()
    status = page.locator("#keys-status-text")
    expect(status).to_have_text(re.compile(r"^Created 500 keys \(IDs (\d+)–(\d+)\)\.$"))
    assert len(creations) == 1
    first, last = map(int, re.search(r"IDs (\d+)–(\d+)", status.inner_text()).groups())
    assert last - first == 499

    # Export exactly those: the dialog says how many, then Check asks the server.
    page.get_by_role("button", name="Export these keys").click()
    export = page.locator("#export-dialog")
    expect(export.get_by_label(f"The 500 new keys (IDs {first}–{last})")).to_be_checked()
    expect(page.locator("#export-count")).to_have_text("The file will hold 500 keys.")
    servers = page.locator("#export-servers")
    expect(servers).not_to_have_value("")
    # A server nobody listens on: said with its detail, and a warning that no server is ok.
    servers.fill("127.0.0.1:1")
    checks = posts_to(page, "/api/v1/keys/export/check")
    export.get_by_role("button", name="Check").click()
    reach = page.locator("#export-check-servers li")
    expect(reach).to_have_text(["127.0.0.1:1: Unreachable (connection refused: nothing listens on that port)"])
    expect(page.locator("#export-check-warning")).to_contain_text("No server was reached")
    # This server: reached with the UMS ID; the file will hold the 500 keys, none refused.
    servers.fill(f"localhost:{port}")
    expect(reach).to_have_count(0)
    export.get_by_role("button", name="Check").click()
    expect(reach).to_have_text([re.compile(rf"^localhost:{port}: OK \(its TLS chain holds the UMS ID ")])
    expect(page.locator("#export-check-summary")).to_have_text("The file will hold 500 keys.")
    expect(page.locator("#export-check-warning")).to_have_text("")
    assert len(checks) == 2
    page.screenshot(path=os.path.join(server["out"], "export-check.png"))
    assert not axe_violations(page), axe_violations(page)
    page.locator("#export-format").select_option("text")
    saved = export_to(page, "berlin-500.txt")
    file = scan(server, saved)
    assert len(file["keys"]) == 500
    assert file["servers"] == [f"localhost:{port}"]
    with open(saved, encoding="utf-8") as text:
        written = re.findall(r"^First-authentication key: (\S+)$", text.read(), re.MULTILINE)
    assert sorted(written) == sorted(revealed(page, list(range(first, last + 1))))
    expect(status).to_contain_text("Exported 500 keys to icg.txt")

    # The key table shows their expiry and folder, and the expiry filter finds them.
    page.locator("#filter-comment").fill("berlin")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 500 (page 1 of 5)")
    row = key_rows(page).first
    expect(row.locator("td.expires")).to_have_text(
        re.compile(rf"^({utc_day(30)}|{utc_day(29)}) \d\d:\d\d:\d\d UTC$"))
    expect(row.locator("td.folder")).to_have_text("/Sites/Berlin")
    expect(row.locator("td.status")).to_have_text("Active")
    page.locator("#filter-expires-before").fill(utc_day(32))
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-range")).to_have_text("Keys 1–100 of 500 (page 1 of 5)")
    page.locator("#filter-expires-before").fill(utc_day(28))
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#keys-range")).to_have_text("No key matches the filter")

    # A device enrolls from the stick; the devices page shows the folder and filters by it.
    enrolled = subprocess.run(
        [FLEET_SIM, "--devices", "1", "--handshakes", "0", "--key-file", saved,
         "--server", f"127.0.0.1:{port}"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    page.get_by_role("link", name="Devices").click()
    page.locator("#devices-folder").fill("/Sites")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#devices-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td.folder")).to_have_text("/Sites/Berlin")
    expect(page.locator("#devices-range")).to_have_text("Devices 1–1 of 1")
    page.locator("#devices-folder").fill("/Sites/Paris")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#devices-range")).to_have_text("No device matches the search")
    expect(rows).to_have_count(0)
    assert not axe_violations(page), axe_violations(page)


def test_an_expired_key_says_so_and_is_not_offered_for_export(page, server):
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "1",
         "--expires-at", "2020-01-01T00:00:00Z", "--comment", "lapsed")
    sign_in(page, server, ADMIN)
    page.locator("#filter-comment").fill("lapsed")
    page.locator("#filter-status").select_option(label="Expired")
    page.get_by_role("button", name="Filter").click()
    expect(key_rows(page)).to_have_count(1)
    row = key_rows(page).first
    expect(row.locator("td.status")).to_have_text("Expired")
    expect(row.locator("td.expires")).to_have_text("2020-01-01 00:00:00 UTC")
    key = row.get_attribute("data-id")
    page.get_by_label(f"Select key {key}", exact=True).check()
    page.get_by_role("button", name="Export", exact=True).click()
    export = page.locator("#export-dialog")
    expect(export.get_by_label(
        "The selected keys (0), not 1 key that cannot go on a stick (1 expired)")).to_be_disabled()
    expect(export.locator("#export-all")).to_be_checked()
    # Every key that can go on a stick, counted without the expired one, as the check counts.
    everything = page.evaluate("""async () => {
        const total = async (status) =>
            (await (await fetch('/api/v1/keys?limit=0&total=true&status=' + status)).json()).total;
        return await total('active') + await total('not_yet_valid');
    }""")
    expect(page.locator("#export-count")).to_have_text(
        f"The file will hold {everything:,} key{'' if everything == 1 else 's'}.")
    export.get_by_role("button", name="Check").click()
    expect(page.locator("#export-check-summary")).to_have_text(
        f"The file will hold {everything:,} key{'' if everything == 1 else 's'}.")
    export.get_by_role("button", name="Cancel").click()


def test_a_mass_key_takes_a_usage_limit_and_dates_and_a_refused_limit_is_named(page, server):
    sign_in(page, server, ADMIN)
    dialog = create(page, "Create mass-deployment key")
    limit = dialog.get_by_label("Usage limit (optional)")
    limit.fill("0")
    dialog.get_by_label("Expires").select_option(label="On a date")
    dialog.get_by_label("Expiry date (the last day it works, UTC)").fill("2030-06-30")
    dialog.get_by_label("Not before (optional: the first day it works, UTC)").fill("2030-01-01")
    dialog.get_by_label("Comment").fill("lab mass")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#create-error")).to_contain_text("usage_limit: a usage limit is from 1 to")
    expect(limit).to_have_attribute("aria-invalid", "true")
    expect(limit).to_be_focused()
    expect(dialog.get_by_label("Expiry date (the last day it works, UTC)")).to_have_value("2030-06-30")
    assert not axe_violations(page), axe_violations(page)
    limit.fill("10")
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#keys-status-text")).to_have_text(re.compile(r"^Created 1 key \(ID \d+\)\.$"))
    page.locator("#filter-comment").fill("lab mass")
    page.get_by_role("button", name="Filter").click()
    row = key_rows(page).first
    expect(row.locator("td.status")).to_have_text("Not yet valid")
    expect(row.locator("td.expires")).to_have_text(
        "2030-06-30 23:59:59 UTC (valid from 2030-01-01 00:00:00 UTC)")
    expect(row.locator("td[data-label='Usage count']")).to_have_text("0 of 10")
    # Other kinds are not offered a usage limit.
    dialog = create(page, "Create one time keys")
    expect(dialog.get_by_label("Usage limit (optional)")).to_be_hidden()
    dialog.get_by_role("button", name="Cancel").click()
