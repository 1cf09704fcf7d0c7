"""Drives the attendee app (`/`) of a running venued in Debian's headless Chromium.

Run by `hw-tests/tests/daemon/browser.rs`, which starts venued, registers the attendees and
passes what this script needs in the environment:

  VENUE_URL            the appliance, e.g. http://127.0.0.1:41234
  VENUE_STAFF_TOKEN    a staff token, to post announcements through the HTTP API
  VENUE_SCREENSHOTS    a directory for the screenshots (phone and desktop sizes)

Every check raises AssertionError with what was expected; the exit status says whether all held.
Playwright drives /usr/bin/chromium (its own browser download does not work here).
"""

import json
import os
import sys
import time
import urllib.request
import uuid

from playwright.sync_api import expect, sync_playwright

URL = os.environ["VENUE_URL"]
STAFF = os.environ["VENUE_STAFF_TOKEN"]
SHOTS = os.environ["VENUE_SCREENSHOTS"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
WRONG_PAIR = "do not match a registration"


def announce(text):
    """Posts an announcement as staff through the HTTP API; returns when it is committed."""
    request = urllib.request.Request(
        f"{URL}/api/v1/channels/announcements/messages",
        data=json.dumps({"content": text}).encode(),
        method="POST",
        headers={
            "authorization": f"Bearer {STAFF}",
            "content-type": "application/json",
            "idempotency-key": str(uuid.uuid4()),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201, f"announcement not stored: {response.status}"


def sign_in(page, ticket, who):
    page.get_by_label("Ticket code").fill(ticket)
    page.get_by_label("Last name or email").fill(who)
    page.get_by_role("button", name="Sign in").click()


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        page = phone.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # Chromium logs every 4xx answer as a console error; the wrong pairs (401) and the budget
        # (429) are expected here, anything else is not.
        expected = ("status of 401", "status of 429")
        page.on(
            "console",
            lambda m: m.type == "error"
            and not any(e in m.text for e in expected)
            and errors.append(m.text),
        )

        # Signed out: the form, and a wrong pair says so without saying which half.
        page.goto(URL + "/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        sign_in(page, "T1", "Nobody")
        expect(page.get_by_role("alert")).to_contain_text(WRONG_PAIR)
        sign_in(page, "NO-SUCH-TICKET", "Lovelace")
        expect(page.get_by_role("alert")).to_contain_text(WRONG_PAIR)
        page.screenshot(path=os.path.join(SHOTS, "attendee-sign-in-phone.png"))

        # The right pair (last name, any case) signs in and opens the live announcements.
        announce("Welcome to the venue! Coffee is in the foyer.")
        sign_in(page, "T1", "lovelace")
        expect(page.get_by_role("heading", name="Announcements")).to_be_visible()
        expect(page.locator("#link")).to_have_text("Live")
        feed = page.get_by_role("list", name="Announcements")
        expect(feed).to_contain_text("Coffee is in the foyer")

        # Posted by staff over HTTP, it shows within 1 s (measured from the commit).
        text = "Keynote moves to Hall B"
        announce(text)
        started = time.monotonic()
        expect(feed.locator("li").first).to_contain_text(text, timeout=1000)
        shown_ms = (time.monotonic() - started) * 1000
        print(f"announcement shown {shown_ms:.0f} ms after its commit")

        # A reload keeps the session (the token is kept) and shows both, newest first, once each.
        page.reload()
        expect(page.locator("#link")).to_have_text("Live")
        expect(feed.locator("li")).to_have_count(2)
        expect(feed.locator("li").first).to_contain_text(text)
        page.screenshot(path=os.path.join(SHOTS, "attendee-announcements-phone.png"))

        desktop = browser.new_context(viewport=DESKTOP)
        wide = desktop.new_page()
        wide.goto(URL + "/")
        sign_in(wide, "T2", "ada@example.org")
        expect(wide.get_by_role("list", name="Announcements").locator("li")).to_have_count(2)
        wide.screenshot(path=os.path.join(SHOTS, "attendee-announcements-desktop.png"))

        # Signing out forgets the token.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert page.evaluate("localStorage.getItem('venue.token')") is None, "token kept after sign-out"

        # The per-ticket budget: after five wrong pairs for one ticket, the sixth try is refused
        # with the wait, even with the right name.
        for _ in range(5):
            sign_in(page, "T3", "Wrong")
            expect(page.get_by_role("alert")).to_contain_text(WRONG_PAIR)
            page.get_by_role("alert").evaluate("e => e.textContent = ''")
        sign_in(page, "T3", "Hopper")
        expect(page.get_by_role("alert")).to_contain_text("Too many attempts")

        assert not errors, f"errors in the page: {errors}"
        browser.close()
    print("attendee app: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
