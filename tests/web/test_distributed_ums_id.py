"""A truthful UMS ID page on every server of a Distributed UMS (issue 27 item 6): three servers on
one PostgreSQL database (ONBOARD_PG_URL, a throwaway cluster tests/tests/e2e/web.rs starts). A
server in sync shows the Main UMS ID as the Main one, its own as Local, and exports the Main UMS
ID's certificate; a server with another cluster's secret is not in sync, which its sign-in page
says at the top, naming both; a refused certificate export shows the server's reason."""

import json
import os
import tempfile

import pytest
from playwright.sync_api import expect

from conftest import ADMIN, ALL_RIGHTS, OUT, sign_in, start_server, stub

PG_URL = os.environ["ONBOARD_PG_URL"]


@pytest.fixture(scope="module")
def cluster():
    folder = tempfile.TemporaryDirectory(prefix="web-cluster-")
    root = folder.name
    secret, other = os.path.join(root, "cluster.secret"), os.path.join(root, "other.secret")
    dirs = {name: os.path.join(root, name) for name in ("main", "in-sync", "not-in-sync")}
    stub(dirs["main"], "cluster-secret", "create", "--out", secret)
    stub(dirs["main"], "cluster-secret", "create", "--out", other)
    flags = {"main": secret, "in-sync": secret, "not-in-sync": other}
    processes, urls = [], {}
    for name in ("main", "in-sync", "not-in-sync"):
        process, url = start_server(dirs[name], "--database", PG_URL, "--cluster-secret", flags[name])
        processes.append(process)
        urls[name] = url
        if name == "main":
            stub(dirs["main"], "--database", PG_URL, "--cluster-secret", secret, "admins", "create",
                 ADMIN[0], "--rights", ALL_RIGHTS, "--password-stdin", stdin=ADMIN[1] + "\n")
    own = {name: json.loads(stub(path, "ums-id", "show", "--json")) for name, path in dirs.items()}
    yield {"urls": urls, "dirs": dirs, "own": own}
    for process in processes:
        process.terminate()
        process.wait(timeout=30)
    folder.cleanup()


def test_a_server_in_sync_shows_the_main_ums_id_as_main_its_own_as_local_and_exports_main(
        page, cluster):
    main, local = cluster["own"]["main"], cluster["own"]["in-sync"]
    assert main["fingerprint"] != local["fingerprint"]
    sign_in(page, {"url": cluster["urls"]["in-sync"]}, ADMIN)
    page.get_by_role("link", name="UMS ID").click()
    expect(page.locator("#ums-id-fingerprint")).to_have_text(main["fingerprint"])
    expect(page.locator("#ums-id-short")).to_have_text(main["short"])
    expect(page.locator("#ums-id-status")).to_have_text("In sync")
    expect(page.locator("#page-ums-id dt", has_text="Local UMS ID").first).to_be_visible()
    expect(page.locator("#ums-id-local")).to_have_text(local["short"])
    expect(page.locator("#ums-id-local-fingerprint")).to_have_text(local["fingerprint"])
    expect(page.locator("#ums-id-sync")).to_be_hidden()
    statuses = page.locator("#servers-table tbody td:nth-child(3)")
    expect(statuses).to_have_count(3)
    assert sorted(statuses.all_inner_texts()) == [
        "In sync", "Main UMS ID", "Not in sync, please restart server"]
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export Main UMS ID").click()
    saved = os.path.join(OUT, "in-sync-ums-id.crt")
    download_info.value.save_as(saved)
    expected = os.path.join(OUT, "main-ums-id.crt")
    stub(cluster["dirs"]["main"], "ums-id", "export", "--out", expected, "--force")
    with open(saved, encoding="ascii") as got, open(expected, encoding="ascii") as want:
        assert got.read() == want.read(), "the .crt is the Main UMS ID's certificate"
    page.screenshot(path=os.path.join(OUT, "ums-id-in-sync.png"), full_page=True)

    # The Main server shows no Local UMS ID: its own is the Main one. (The session cookie is the
    # host's, whatever the port, and the session is the cluster's: no second sign-in.)
    page.goto(cluster["urls"]["main"] + "/app/#ums-id")
    expect(page.locator("#ums-id-status")).to_have_text("Main UMS ID")
    expect(page.locator("#ums-id-fingerprint")).to_have_text(main["fingerprint"])
    expect(page.locator("#ums-id-local")).to_be_hidden()


def test_a_refused_certificate_export_shows_the_servers_reason(page, cluster):
    sign_in(page, {"url": cluster["urls"]["main"]}, ADMIN)
    page.get_by_role("link", name="UMS ID").click()
    expect(page.locator("#ums-id-status")).to_have_text("Main UMS ID")
    # What a server not in sync answers (its sessions cannot be verified there, so the browser
    # cannot reach it signed in): the page shows the problem's detail.
    page.route("**/api/v1/ums-id/certificate", lambda route: route.fulfill(
        status=503, content_type="application/problem+json",
        body=json.dumps({"type": "about:blank", "title": "Server not in sync", "status": 503,
                         "code": "server_not_in_sync",
                         "detail": "this server is not in sync with the Main UMS ID"})))
    page.get_by_role("button", name="Export Main UMS ID").click()
    expect(page.locator("#ums-id-error")).to_have_text("this server is not in sync with the Main UMS ID")


def test_a_server_not_in_sync_says_so_at_the_top_naming_the_main_and_its_local_ums_id(
        page, cluster):
    main, local = cluster["own"]["main"], cluster["own"]["not-in-sync"]
    page.goto(cluster["urls"]["not-in-sync"] + "/")
    banner = page.locator("#signin-sync")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(f"not in sync with the Main UMS ID {main['short']}")
    expect(banner).to_contain_text(f"Local UMS ID {local['short']}")
    assert banner.bounding_box()["y"] <= 1, "at the top"
    page.get_by_label("Name").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("not in sync")
    page.screenshot(path=os.path.join(OUT, "not-in-sync-sign-in.png"), full_page=True)
