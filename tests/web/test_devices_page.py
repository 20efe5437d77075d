"""The devices page (issue 27 item 5): it fits the window at 1280 and 1920 px with Delete in view,
searches by unit ID prefix, refreshes online and last seen while devices hold their sessions (the
fleet simulator's), sends renew-now and inventory-now only with devices:write, and names the key
each device enrolled with and its folder."""

import os
import re
import subprocess

from playwright.sync_api import expect

from conftest import ADMIN, sign_in, stub

FLEET_SIM = os.environ["FLEET_SIM_BIN"]
VIEWER = ("viewer", "viewer password 2026")


def test_the_devices_page_fits_searches_refreshes_and_sends_commands(page, server):
    port = server["url"].rsplit(":", 1)[1]
    stub(server["data_dir"], "admins", "create", VIEWER[0], "--rights", "devices:read",
         "--password-stdin", stdin=VIEWER[1] + "\n")
    stub(server["data_dir"], "keys", "create", "one-time", "--quantity", "3", "--comment", "devices")
    stick = os.path.join(server["folder"], "icg.xml")
    stub(server["data_dir"], "keys", "export", "--out", stick, "--server", f"127.0.0.1:{port}")
    fleet = subprocess.Popen(
        [FLEET_SIM, "--devices", "3", "--json", "--handshakes", "0", "--connect", "--hold", "60",
         "--key-file", stick, "--server", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        sign_in(page, server, ADMIN)
        page.get_by_role("link", name="Devices").click()
        rows = page.locator("#devices-table tbody tr")
        # The page asks again every 5 s: the devices appear, online, without a reload.
        expect(rows).to_have_count(3, timeout=30000)
        expect(page.locator("#devices-table td.online")).to_have_count(3, timeout=30000)
        first = rows.first
        # Each names the key it enrolled with: one of the three, each key once.
        keys = page.locator("#devices-table tbody td[data-label='Key']")
        expect(keys).to_have_text([re.compile(r"^Key [123] \(One-time\)$")] * 3)
        assert sorted(keys.all_inner_texts()) == [f"Key {n} (One-time)" for n in (1, 2, 3)]
        expect(page.locator("#devices-table thead th", has_text="Folder")).to_be_visible()

        # Last seen follows a device while it is online.
        seen = first.locator("td.last-seen")
        expect(seen).to_contain_text("Now (")
        before = seen.inner_text()
        expect(seen).not_to_have_text(before, timeout=15000)

        for width in (1280, 1920):
            page.set_viewport_size({"width": width, "height": 900})
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{overflow} px wider than the window at {width} px"
            delete = first.get_by_role("button", name="Delete device")
            box = delete.bounding_box()
            assert box and box["x"] + box["width"] <= width, f"Delete is cut off at {width} px"
            page.screenshot(path=os.path.join(server["out"], f"devices-{width}.png"))

        unit = first.locator("td").first.inner_text()
        first.get_by_role("button", name="Send renew-now").click()
        expect(page.locator("#devices-status")).to_contain_text(f"Sent renew-now to {unit} through")
        first.get_by_role("button", name="Send inventory-now").click()
        expect(page.locator("#devices-status")).to_contain_text(
            f"Sent inventory-now to {unit} through")

        # Search: a unit ID typed in part, with separators; nothing found says so.
        page.locator("#devices-search").fill(unit[:2] + ":" + unit[2:4])
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#devices-range")).to_have_text("Devices 1–3 of 3")
        page.locator("#devices-search").fill(unit)
        page.get_by_role("button", name="Search").click()
        expect(rows).to_have_count(1)
        expect(page.locator("#devices-range")).to_have_text("Devices 1–1 of 1")
        page.locator("#devices-search").fill("no-such-device")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#devices-range")).to_have_text("No device matches the search")
        expect(rows).to_have_count(0)

        # Without devices:write: no command and no Delete is offered.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(server["url"] + "/")
        sign_in(page, server, VIEWER)
        page.get_by_role("link", name="Devices").click()
        expect(rows).to_have_count(3)
        expect(page.get_by_role("button", name="Send renew-now")).to_have_count(0)
        expect(page.get_by_role("button", name="Send inventory-now")).to_have_count(0)
        expect(page.get_by_role("button", name="Delete device")).to_have_count(0)
    finally:
        fleet.terminate()
        fleet.wait(timeout=30)
