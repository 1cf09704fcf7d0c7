"""A kiosk scanning one badge a second for VENUE_BENCH_SCANS scans (hw-tests/tests/daemon/
page_bench.rs): each scan's time from the scanner's Enter to the welcome on screen, measured in
the page (a keydown listener and a MutationObserver on the result), then the percentiles."""

import os
import time

from playwright.sync_api import expect, sync_playwright

from pagetest import launch, run

URL = os.environ["VENUE_URL"]
PASSWORD = os.environ["VENUE_KIOSK_PASSWORD"]
SCANS = int(os.environ["VENUE_BENCH_SCANS"])

# Times each scan in the page: from the Enter the scanner types to the result's new title.
TIMING = """
window.scanTimes = [];
let sent = null;
document.addEventListener("keydown", (e) => { if (e.key === "Enter") sent = performance.now(); }, true);
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const title = document.querySelector(".result .title");
    if (sent !== null && title && title.textContent.startsWith("Welcome")) {
      window.scanTimes.push(performance.now() - sent);
      sent = null;
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
});
"""


def main():
    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1024, "height": 768})
        context.add_init_script(TIMING)
        page = context.new_page()
        page.goto(URL + "/kiosk")
        page.get_by_label("Device id").fill("desk-b")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".result")).to_contain_text("Ready")
        page.reload()  # the timing script is in place from the start
        expect(page.locator(".result")).to_contain_text("Ready")
        started = time.monotonic()
        for i in range(SCANS):
            due = started + i
            time.sleep(max(0, due - time.monotonic()))
            page.keyboard.type(f"B{i:05}")
            page.keyboard.press("Enter")
            expect(page.locator(".result .title")).to_have_text(f"Welcome, Bench Person {i}!")
        times = sorted(page.evaluate("window.scanTimes"))
        assert len(times) == SCANS, f"{len(times)} results timed of {SCANS} scans"
        pct = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        print(f"kiosk: {SCANS} scans at one a second over {time.monotonic() - started:.0f} s; "
              f"scan to result on screen p50 {pct(0.5):.1f} ms, p90 {pct(0.9):.1f} ms, "
              f"p99 {pct(0.99):.1f} ms, max {times[-1]:.1f} ms")
        browser.close()


if __name__ == "__main__":
    run(main)
