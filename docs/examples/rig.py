#!/usr/bin/env python3
"""An example integration rig for ums-stub in test-rig mode, in Python's standard library only.

It starts `ums-stub serve --test-rig` on free loopback ports, reads the two addresses the server
prints, and drives it over the control listener (plain JSON under /rig/v1/):

1. reads the server's facts (URL, UMS ID fingerprint and certificate) and pins the UMS ID;
2. puts a fault plan in force and reads it back;
3. asks for a key file (the XML of a USB stick) and enrolls a device with its key over EST, as a
   device would (the CSR is made by the `openssl` command), the first answer lost after the
   commit (a `drop_after_commit` fault) and the retry answered with the same certificate;
4. reads the status of the device's certificate, moves the server's clock past its lifetime and
   reads it again: `valid`, then `expired`;
5. calls a route the server does not serve and finds it in strict mode's counts;
6. resets (faults off, clock back) and stops the server.

Run it with the path of the `ums-stub` binary (or set UMS_STUB):

    python3 docs/examples/rig.py target/debug/ums-stub

It exits 0 and prints `rig: every check passed` when every check holds; an AssertionError says
which did not. The project's tests run it (tests/tests/e2e/rig.rs).
"""

import base64
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree

DEVICE = "00E0C5000001"


def control(base, method, path, body=None):
    """One request to the control listener: (status, JSON answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def start(binary, data_dir):
    """`ums-stub serve --test-rig` on free loopback ports: the process, its URL's port and the
    control listener's base URL, read from the lines it prints."""
    server = subprocess.Popen(
        [binary, "--data-dir", data_dir, "serve", "--listen", "127.0.0.1:0",
         "--host", "localhost", "--test-rig", "--test-rig-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    main = control_at = None
    for line in server.stdout:
        if line.startswith("listening on "):
            main = line.split()[-1]
        elif line.startswith("test-rig control on "):
            control_at = line.split()[-1]
            break
    assert main and control_at, "ums-stub serve --test-rig printed no addresses"
    return server, int(main.rsplit(":", 1)[1]), "http://" + control_at


def csr(unit_id, folder):
    """A P-256 key and its PKCS#10 request for `unit_id`, base64 DER as EST sends it."""
    key = os.path.join(folder, "device.key")
    der = subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-subj", "/CN=" + unit_id, "-outform", "DER"],
        check=True, capture_output=True).stdout
    return base64.b64encode(der)


def serial_of(pkcs7_base64, folder):
    """The serial (lowercase hex) of the certificate in an EST answer (base64 PKCS#7)."""
    path = os.path.join(folder, "answer.p7")
    with open(path, "wb") as out:
        out.write(base64.b64decode(pkcs7_base64))
    pem = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-in", path, "-print_certs"],
                         check=True, capture_output=True).stdout
    text = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                          check=True, capture_output=True).stdout.decode()
    return text.strip().split("=", 1)[1].lower()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UMS_STUB", "ums-stub")
    with tempfile.TemporaryDirectory() as folder:
        server, port, base = start(binary, os.path.join(folder, "data"))
        try:
            run(base, port, folder)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print("rig: every check passed")


def run(base, port, folder):
    # 1. The server's facts; the UMS ID pinned as the only trust anchor.
    status, facts = control(base, "GET", "/rig/v1/server")
    assert status == 200, facts
    assert facts["url"] == f"https://localhost:{port}", facts
    tls = ssl.create_default_context(cadata=facts["ums_id_certificate_pem"])

    # 2. A fault plan in force: a quarter of the admin API's requests answered 503.
    plan = {"seed": 7, "routes": {"admin": [
        {"probability": 0.25, "fault": {"kind": "refuse", "status": 503, "retry_after_seconds": 2}}]}}
    status, in_force = control(base, "PUT", "/rig/v1/faults", plan)
    assert status == 200, in_force
    assert control(base, "GET", "/rig/v1/faults")[1] == in_force
    status, refused = control(base, "PUT", "/rig/v1/faults",
                              {"routes": {"admin": [{"probability": 2, "fault": {"kind": "hold"}}]}})
    assert status == 422 and "routes.admin[0].probability" in refused["detail"], refused

    # 3. A key file, and a device enrolling with its key (EST simpleenroll, HTTP Basic).
    request = urllib.request.Request(base + "/rig/v1/key-files", method="POST",
                                     data=json.dumps({"kind": "one-time", "count": 1}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        stick = ElementTree.fromstring(answer.read())
    assert stick.find("ums-id").get("fingerprint") in facts["ums_id_fingerprint"], facts
    key = stick.find("key").get("value")
    basic = base64.b64encode(f"{DEVICE}:{key}".encode()).decode()
    enroll = urllib.request.Request(
        facts["url"] + "/.well-known/est/simpleenroll", data=csr(DEVICE, folder), method="POST",
        headers={"Content-Type": "application/pkcs10", "Authorization": "Basic " + basic})
    # The first answer is lost after the server committed it (every enrollment, for now): the
    # device sees the connection close. Its retry with the same key and request is answered with
    # the certificate already issued; the one-time key served this device once, and no other.
    lose = {"routes": {"enrollment": [{"probability": 1, "fault": {"kind": "drop_after_commit"}}]}}
    assert control(base, "PUT", "/rig/v1/faults", lose)[0] == 200
    try:
        urllib.request.urlopen(enroll, context=tls, timeout=30)
        raise AssertionError("the answer was not lost")
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
        pass
    assert control(base, "PUT", "/rig/v1/faults", {})[0] == 200
    with urllib.request.urlopen(enroll, context=tls, timeout=30) as answer:
        assert answer.status == 200
        serial = serial_of(answer.read(), folder)

    # 4. The certificate's status, before and after the clock moves past its lifetime (a year).
    status, certificate = control(base, "GET", f"/rig/v1/certificates/{serial}")
    assert status == 200 and certificate["status"] == "valid", certificate
    assert certificate["unit_id"] == DEVICE, certificate
    status, clock = control(base, "POST", "/rig/v1/clock/advance", {"seconds": 400 * 86400})
    assert status == 200 and clock["offset_seconds"] == 400 * 86400, clock
    assert control(base, "GET", f"/rig/v1/certificates/{serial}")[1]["status"] == "expired"
    assert control(base, "GET", "/rig/v1/certificates/0badc0de")[1]["status"] == "unknown"

    # 5. Strict mode: a route the server does not serve is counted.
    try:
        urllib.request.urlopen(facts["url"] + "/api/v2/devices", context=tls, timeout=30)
        raise AssertionError("/api/v2/devices was served")
    except urllib.error.HTTPError as missing:
        assert missing.code == 404
    status, counted = control(base, "GET", "/rig/v1/strict")
    assert counted["requests"] == [{"method": "GET", "path": "/api/v2/devices", "count": 1}], counted

    # 6. Reset: faults off, the clock back, the counts cleared.
    assert control(base, "POST", "/rig/v1/reset")[0] == 200
    assert control(base, "GET", "/rig/v1/clock")[1]["offset_seconds"] == 0
    assert control(base, "GET", "/rig/v1/faults")[1]["routes"] == {}
    assert control(base, "GET", "/rig/v1/strict")[1]["total"] == 0
    assert control(base, "GET", f"/rig/v1/certificates/{serial}")[1]["status"] == "valid"
    assert re.fullmatch(r"[0-9a-f]+", serial)


if __name__ == "__main__":
    main()
