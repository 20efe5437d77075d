"""Fixtures and helpers of the Web App's browser tests (tests/web/test_*.py): Debian's chromium
driven by Playwright, against `ums-stub serve`.

Run by tests/tests/e2e/web.rs (so `cargo test --workspace` runs them), which passes:
  UMS_STUB_BIN, ONBOARD_AGENT_BIN  the binaries of this build
  ONBOARD_WEB_OUT                  where screenshots and downloads go
  ONBOARD_PG_URL                   an empty PostgreSQL database (a throwaway cluster), for the
                                   Distributed UMS page
  ONBOARD_CHROMIUM                 the browser (default /usr/bin/chromium)
Never `playwright install`: it downloads a browser, and nothing but the package registries can be
reached. The accessibility scan is axe-core as the PyPI package axe-playwright-python bundles it
(axe.min.js inside the wheel): nothing is fetched at run time.
"""

import json
import os
import subprocess
import tempfile

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

UMS_STUB = os.environ["UMS_STUB_BIN"]
AGENT = os.environ["ONBOARD_AGENT_BIN"]
OUT = os.environ.get("ONBOARD_WEB_OUT") or tempfile.mkdtemp(prefix="web-out-")
CHROMIUM = os.environ.get("ONBOARD_CHROMIUM", "/usr/bin/chromium")

ALL_RIGHTS = (
    "keys:read,keys:write,keys:reveal,keys:export,devices:read,devices:write,audit:read,server:admin"
)
ADMIN = ("admin", "admin password 2026")
READER = ("reader", "reader password 2026")
WRITER = ("writer", "writer password 2026")


def stub(data_dir, *args, stdin=None):
    """Runs `ums-stub --data-dir DATA_DIR ARGS`; its standard output."""
    result = subprocess.run(
        [UMS_STUB, "--data-dir", data_dir, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def server():
    folder = tempfile.TemporaryDirectory(prefix="web-ums-")
    data_dir = os.path.join(folder.name, "data")
    stub(data_dir, "admins", "create", ADMIN[0], "--rights", ALL_RIGHTS, "--password-stdin",
         stdin=ADMIN[1] + "\n")
    stub(data_dir, "admins", "create", READER[0], "--rights", "keys:read", "--password-stdin",
         stdin=READER[1] + "\n")
    stub(data_dir, "admins", "create", WRITER[0], "--rights", "keys:read,keys:write",
         "--password-stdin", stdin=WRITER[1] + "\n")
    process, url = start_server(data_dir)
    yield {"url": url, "data_dir": data_dir, "folder": folder.name, "out": OUT}
    process.terminate()
    process.wait(timeout=30)
    folder.cleanup()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    # The server's certificate is issued by its UMS ID, which the browser does not know; the pinned
    # trust of devices and the command line is tested elsewhere.
    context = browser.new_context(
        ignore_https_errors=True, accept_downloads=True, viewport={"width": 1280, "height": 860}
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    yield page
    page.screenshot(path=os.path.join(OUT, request.node.name + ".png"), full_page=True)
    context.close()
    # A refused API call logs a console error in chromium ("Failed to load resource: 403"); other
    # errors (a script failing, a CSP violation) fail the test.
    unexpected = [e for e in errors if "Failed to load resource" not in e]
    assert not unexpected, unexpected


def sign_in(page, server, account):
    page.goto(server["url"] + "/")
    page.get_by_label("Name").fill(account[0])
    page.get_by_label("Password").fill(account[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app/**")
    expect(page.locator("#account-name")).to_have_text(account[0])


def key_rows(page):
    return page.locator("#keys-table tbody tr")


def create(page, kind):
    """Opens the Create dialog with option `kind` chosen; the dialog."""
    page.get_by_role("button", name="Create", exact=True).click()
    dialog = page.locator("#create-dialog")
    dialog.get_by_label(kind, exact=True).check()
    return dialog




def start_server(data_dir, *args):
    """Starts `ums-stub serve` on a free loopback port; (process, https URL)."""
    process = subprocess.Popen(
        [UMS_STUB, "--data-dir", data_dir, *args, "serve", "--listen", "127.0.0.1:0",
         "--host", "localhost", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("listening on"), line
    port = line.strip().rsplit(":", 1)[1]
    return process, f"https://localhost:{port}"


def axe_violations(page):
    """The serious and critical findings of axe-core (its default rules) on the page as shown."""
    results = Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:5])
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
