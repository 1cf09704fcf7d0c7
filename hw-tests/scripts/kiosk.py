"""Drives the check-in desk (`/kiosk`) of a running venued in Debian's headless Chromium, as a
tablet with a USB QR scanner would use it (the scanner is a keyboard: it types the code and
Enter).

Run by `hw-tests/tests/daemon/browser.rs` (`drive`), which starts venued, registers the
attendees and the kiosk, and passes:

  VENUE_URL              the appliance, e.g. http://127.0.0.1:41234
  VENUE_KIOSK_ID         the kiosk's device id
  VENUE_KIOSK_PASSWORD   its password
  VENUE_ADMIN_TOKEN      the admin token (to register a badge printer)
  VENUE_SCREENSHOTS      a directory for the screenshots

Every check raises AssertionError with what was expected; the exit status says whether all held.
"""

import json
import os
import queue
import socket
import threading
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

from pagetest import audit, checkins, control_venued, first_load, launch, run

URL = os.environ["VENUE_URL"]
KIOSK = os.environ["VENUE_KIOSK_ID"]
PASSWORD = os.environ["VENUE_KIOSK_PASSWORD"]
SHOTS = os.environ["VENUE_SCREENSHOTS"]
ADMIN = os.environ["VENUE_ADMIN_TOKEN"]
TABLET = {"width": 1024, "height": 768}


def scan(page, code):
    """What a keyboard-wedge scanner does: types into whatever has focus, then Enter."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")


class Zebra:
    """A ZPL label printer's port 9100, on loopback: each connection that sends a label puts it
    on `labels` (health checks connect and send nothing)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.labels = queue.Queue()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed: the printer is off
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            if data:
                self.labels.put(data.decode())

    def off(self):
        # shutdown first: close alone leaves the port listening while accept() blocks on it.
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def add_printer(uri):
    body = json.dumps({"id": "zebra-1", "kind": "zpl", "uri": uri, "kiosks": [KIOSK]}).encode()
    request = urllib.request.Request(URL + "/api/v1/admin/printers", data=body, method="POST", headers={
        "authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201, response.status


def main():
    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport=TABLET, has_touch=True)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # 401: the wrong password; 404: the unknown ticket; refused: venued stopped on purpose.
        expected = ("status of 401", "status of 404", "ERR_CONNECTION_REFUSED")
        page.on("console", lambda m: m.type == "error" and not any(e in m.text for e in expected)
                and errors.append(m.text))
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # Set up once with the kiosk's credentials; a wrong password says so (and no browser
        # password dialog opens over the page).
        page.goto(URL + "/kiosk")
        expect(page.get_by_role("heading", name="Set up this kiosk")).to_be_visible()
        first_load(page, "kiosk")
        page.get_by_label("Device id").fill(KIOSK)
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not a registered kiosk")
        audit(page, "kiosk sign-in")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        result = page.locator(".result")
        expect(result).to_contain_text("Ready")
        page.reload()
        expect(result).to_contain_text("Ready")
        expect(page.get_by_label("Scan a badge or type a ticket code")).to_be_focused()

        # A scan checks in: welcome, with the name and company, in the welcome colour.
        started = time.monotonic()
        scan(page, "T1")
        expect(result).to_contain_text("Welcome, Grace Lovelace!")
        print(f"scan to result on screen: {(time.monotonic() - started) * 1000:.0f} ms")
        expect(result).to_contain_text("Analytical Engines")
        expect(result).to_have_attribute("data-kind", "welcome")
        # The same badge again: already checked in, when and where.
        scan(page, "T1")
        expect(result).to_contain_text("Grace Lovelace is already checked in")
        expect(result).to_contain_text(f"at {KIOSK}")
        expect(result).to_have_attribute("data-kind", "already")
        # A code nobody has: unknown ticket.
        scan(page, "NOPE-404")
        expect(result).to_contain_text("Unknown ticket")
        expect(result).to_have_attribute("data-kind", "unknown")
        # The badge's QR code carries the app's link with the code: the kiosk takes the code.
        scan(page, "http://venue-edge.local/?ticket=T2")
        expect(result).to_contain_text("Welcome, Ada Byron!")
        assert checkins("a1") == 1 and checkins("a2") == 1, "each scan stored once"

        # By name, for the person without their badge.
        page.get_by_label("Or find by name").fill("Grace H")
        page.get_by_role("button", name="Find").click()
        page.get_by_role("button", name="Check in Grace Hopper").click()
        expect(result).to_contain_text("Welcome, Grace Hopper!")
        expect(page.get_by_label("Scan a badge or type a ticket code")).to_be_focused()
        recent = page.get_by_role("list", name="Recent scans")
        expect(recent.locator("li")).to_have_count(5)
        page.screenshot(path=os.path.join(SHOTS, "kiosk-tablet.png"))
        audit(page, "kiosk desk")

        # The appliance stops: scans wait on the tablet (a reload in between too), then each is
        # checked in once when it is back, in scan order.
        page.wait_for_function("navigator.serviceWorker.controller !== null")
        control_venued("STOP")
        scan(page, "T4")
        expect(result).to_contain_text("Scan kept")
        expect(page.get_by_text("1 scan waiting to be sent")).to_be_visible(timeout=10_000)
        scan(page, "T5")
        scan(page, "T4")
        expect(page.get_by_text("3 scans waiting to be sent")).to_be_visible(timeout=10_000)
        page.screenshot(path=os.path.join(SHOTS, "kiosk-offline-tablet.png"))
        page.reload()
        expect(page.get_by_text("3 scans waiting to be sent")).to_be_visible(timeout=10_000)
        control_venued("START")
        expect(page.get_by_text("scans waiting to be sent")).to_have_count(0, timeout=30_000)
        expect(recent.locator("li").nth(0)).to_contain_text("Already checked in: Alan Turing")
        expect(recent.locator("li").nth(1)).to_contain_text("Checked in: Katherine Johnson")
        expect(recent.locator("li").nth(2)).to_contain_text("Checked in: Alan Turing")
        assert checkins("a4") == 1, f"Alan Turing checked in {checkins('a4')} times"
        assert checkins("a5") == 1, f"Katherine Johnson checked in {checkins('a5')} times"

        # A badge printer for this kiosk: a check-in shows the badge printing, then printed; a
        # reprint prints one more; with the printer off, a badge asked for says why it waits.
        zebra = Zebra()
        add_printer(f"tcp://127.0.0.1:{zebra.port}")
        scan(page, "T6")
        expect(result).to_contain_text("Welcome, Dorothy Vaughan!")
        badge = result.locator(".print")
        expect(badge).to_contain_text("Badge printed.", timeout=15_000)
        label = zebra.labels.get(timeout=15)
        assert "Dorothy Vaughan" in label and label.startswith("^XA"), label
        badge.get_by_role("button", name="Reprint badge").click()
        expect(badge).to_contain_text("Badge printed.", timeout=15_000)
        assert "Dorothy Vaughan" in zebra.labels.get(timeout=15), "the reprint did not arrive"
        page.screenshot(path=os.path.join(SHOTS, "kiosk-badge-tablet.png"))
        zebra.off()
        scan(page, "T6")
        expect(result).to_contain_text("Dorothy Vaughan is already checked in")
        badge.get_by_role("button", name="Print badge").click()
        expect(badge).to_contain_text("Badge waiting: printer unreachable", timeout=15_000)
        assert zebra.labels.empty(), "a label arrived at a printer that is off"

        assert not dialogs, f"the page opened dialogs: {dialogs}"
        assert not errors, f"errors in the page: {errors}"
        browser.close()
    print("kiosk: all checks passed")


if __name__ == "__main__":
    run(main)
