"""Drives a room's display (`/signage/{display}`) of a running venued (with `--demo`) in
Debian's headless Chromium at 1920x1080.

Run by `hw-tests/tests/daemon/browser.rs` (`drive`), which starts venued, registers the display
and passes:

  VENUE_URL                the appliance, e.g. http://127.0.0.1:41234
  VENUE_DISPLAY            the display's id (its signage device)
  VENUE_DISPLAY_PASSWORD   its password
  VENUE_ADMIN_TOKEN        the admin token, to set the display's content and the rooms
  VENUE_STAFF_TOKEN        a staff token, to post announcements
  VENUE_SCREENSHOTS        a directory for the screenshots

Every check raises AssertionError with what was expected; the exit status says whether all held.
"""

import json
import os
import time
import urllib.error
import urllib.request
import uuid

from playwright.sync_api import expect, sync_playwright

from pagetest import audit, control_venued, first_load, launch, run

URL = os.environ["VENUE_URL"]
DISPLAY = os.environ["VENUE_DISPLAY"]
PASSWORD = os.environ["VENUE_DISPLAY_PASSWORD"]
ADMIN = os.environ["VENUE_ADMIN_TOKEN"]
STAFF = os.environ["VENUE_STAFF_TOKEN"]
SHOTS = os.environ["VENUE_SCREENSHOTS"]
HD = {"width": 1920, "height": 1080}
UPDATES = 2000


def call(method, path, body, token):
    """One request; past a poster's budget (429) it waits as `Retry-After` says and tries again
    under the same idempotency key, as a client should."""
    request = urllib.request.Request(
        URL + path, data=json.dumps(body).encode(), method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json",
                 "idempotency-key": str(uuid.uuid4())},
    )
    for _ in range(20):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status in (200, 201), f"{method} {path}: {response.status}"
                return
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise AssertionError(f"{method} {path}: {e.code} {e.read()[:200]!r}") from e
            time.sleep(float(e.headers.get("retry-after") or 1))
    raise AssertionError(f"{method} {path}: still over the budget")


def content(body):
    call("PUT", f"/api/v1/admin/signage/{DISPLAY}/content", body, ADMIN)


def announce(text):
    call("POST", "/api/v1/channels/announcements/messages", {"content": text}, STAFF)


def heap(cdp):
    """The JS heap in use after a full garbage collection, bytes."""
    cdp.send("HeapProfiler.collectGarbage")
    return cdp.send("Runtime.getHeapUsage")["usedSize"]


def main():
    content({"zone": "hall-a", "message": "Welcome to Hall A"})
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport=HD).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        expected = ("ERR_CONNECTION_REFUSED", "WebSocket connection")  # venued stopped on purpose
        page.on("console", lambda m: m.type == "error" and not any(e in m.text for e in expected)
                and errors.append(m.text))

        # Set up once with the display's credentials.
        page.goto(f"{URL}/signage/{DISPLAY}")
        expect(page.get_by_role("heading", name=f"Set up display {DISPLAY}")).to_be_visible()
        first_load(page, "display")
        audit(page, "signage setup")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        # The room, its sessions, the message, the app's address and QR code.
        expect(page.get_by_role("heading", name="Hall A")).to_be_visible()
        expect(page.locator(".message")).to_have_text("Welcome to Hall A")
        expect(page.locator(".slot").first).to_contain_text("Now")
        expect(page.locator("footer")).to_contain_text(f"{URL}/")
        qr = page.get_by_role("img", name="QR code of the venue app's address")
        expect(qr).to_be_visible()
        assert page.evaluate("document.querySelector('footer img').naturalWidth") > 0, "no QR code"
        expect(page.locator(".state")).to_have_text("", timeout=10_000)  # MQTT live

        # The demo simulator's badges walk in: the count follows, live.
        count = page.locator(".occupancy .count")
        expect(count).not_to_have_text("0 of 800 seats taken", timeout=60_000)
        first = count.text_content()
        expect(count).not_to_have_text(first, timeout=60_000)
        print(f"occupancy followed: {first} → {count.text_content()}")

        # Content and announcements, live.
        content({"zone": "hall-a", "message": "Doors close at 10:05"})
        expect(page.locator(".message")).to_have_text("Doors close at 10:05", timeout=2000)
        announce("Lunch is served in the foyer")
        announcements = page.get_by_role("list", name="Announcements")
        expect(announcements.locator("li").first).to_contain_text("Lunch is served", timeout=2000)
        page.screenshot(path=os.path.join(SHOTS, "signage-1080p.png"))
        audit(page, "signage")

        # A full room is unmistakable: the foyer (where most of the demo's badges are), given
        # ten seats, moved to by content.
        call("POST", "/api/v1/admin/zones", {"id": "foyer", "capacity": 10}, ADMIN)
        content({"zone": "foyer", "message": "Registration is open"})
        expect(page.get_by_role("heading", name="Foyer")).to_be_visible(timeout=5000)
        expect(page.get_by_text("FULL", exact=True)).to_be_visible(timeout=60_000)
        page.screenshot(path=os.path.join(SHOTS, "signage-full-1080p.png"))
        content({"zone": "hall-a", "message": "Welcome to Hall A"})
        expect(page.get_by_role("heading", name="Hall A")).to_be_visible(timeout=5000)

        # venued restarts: the display comes back by itself and follows again.
        control_venued("RESTART")
        content({"zone": "hall-a", "message": "Back after a restart"})
        expect(page.locator(".message")).to_have_text("Back after a restart", timeout=60_000)

        # Thousands of updates, and the heap stays where it was.
        cdp = page.context.new_cdp_session(page)
        before = heap(cdp)
        started = time.monotonic()
        for i in range(UPDATES):
            if i % 20 == 19:
                announce(f"Update {i}")
            else:
                content({"zone": "hall-a", "message": f"Update {i}"})
        last = UPDATES - 1
        expect(page.get_by_text(f"Update {last}")).to_be_visible(timeout=30_000)
        after = heap(cdp)
        print(f"signage heap: {before} bytes before, {after} after {UPDATES} updates "
              f"in {time.monotonic() - started:.1f} s")
        assert after - before < 1024 * 1024, f"the heap grew by {after - before} bytes"
        assert page.locator(".announcements li").count() == 3, "announcements kept beyond three"

        assert not errors, f"errors in the page: {errors}"
        browser.close()
    print("signage: all checks passed")


if __name__ == "__main__":
    run(main)
