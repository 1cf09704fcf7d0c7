"""An attendee signs in on one appliance and the same token opens the app on another of the
event, in Debian's headless Chromium.

Run by `hw-tests/tests/daemon/browser.rs`, which starts both appliances and a relay between
them, registers the attendee on A and waits until A's key and the attendee have reached B.

  VENUE_A_URL          the appliance signed in on (registration), e.g. http://127.0.0.1:41234
  VENUE_B_URL          another appliance of the same event (a hall)
  VENUE_SCREENSHOTS    a directory for the screenshots

Every check raises AssertionError with what was expected; the exit status says whether all held.
"""

import os
import sys

from playwright.sync_api import expect, sync_playwright

A = os.environ["VENUE_A_URL"]
B = os.environ["VENUE_B_URL"]
PHONE = {"width": 390, "height": 844}


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        page = browser.new_context(viewport=PHONE).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # Signed in at registration: the token is A's.
        page.goto(A + "/")
        page.get_by_label("Ticket code").fill("T1")
        page.get_by_label("Last name or email").fill("Lovelace")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#link")).to_have_text("Live")
        token = page.evaluate("localStorage.getItem('venue.token')")
        assert token, "no token kept after signing in on A"

        # In the hall, on B: the same token opens the app, live, as the same person.
        page.goto(f"{B}/?token={token}")
        expect(page.get_by_role("heading", name="Announcements")).to_be_visible()
        expect(page.locator("#link")).to_have_text("Live")
        page.get_by_role("button", name="You").click()
        expect(page.get_by_text("Grace Lovelace")).to_be_visible()
        assert not errors, f"errors in the page: {errors}"
        browser.close()
    print("two appliances: a token signed on A opened B")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
