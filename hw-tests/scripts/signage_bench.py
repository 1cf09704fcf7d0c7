"""A display's day compressed (hw-tests/tests/daemon/page_bench.rs): VENUE_BENCH_UPDATES
updates (content, and one announcement in twenty) as fast as the appliance takes them, the JS heap
after a collection and the DOM's node count sampled every tenth of the run."""

import json
import os
import time
import urllib.error
import urllib.request
import uuid

from playwright.sync_api import expect, sync_playwright

from pagetest import launch, run

URL = os.environ["VENUE_URL"]
PASSWORD = os.environ["VENUE_DISPLAY_PASSWORD"]
ADMIN = os.environ["VENUE_ADMIN_TOKEN"]
STAFF = os.environ["VENUE_STAFF_TOKEN"]
UPDATES = int(os.environ["VENUE_BENCH_UPDATES"])


def call(method, path, body, token):
    request = urllib.request.Request(
        URL + path, data=json.dumps(body).encode(), method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json",
                 "idempotency-key": str(uuid.uuid4())})
    for _ in range(50):
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
            time.sleep(float(e.headers.get("retry-after") or 1))


def sample(cdp):
    cdp.send("HeapProfiler.collectGarbage")
    heap = cdp.send("Runtime.getHeapUsage")["usedSize"]
    nodes = cdp.send("Memory.getDOMCounters")["nodes"]
    return heap, nodes


def main():
    call("PUT", "/api/v1/admin/signage/door-b/content", {"zone": "hall-a", "message": "start"}, ADMIN)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
        page.goto(f"{URL}/signage/door-b")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".message")).to_have_text("start")
        expect(page.locator(".state")).to_have_text("", timeout=10_000)
        cdp = page.context.new_cdp_session(page)
        samples = [(0, *sample(cdp))]
        started = time.monotonic()
        step = max(1, UPDATES // 10)
        shown = 0  # the last content update sent
        for i in range(1, UPDATES + 1):
            if i % 20 == 10:
                call("POST", "/api/v1/channels/announcements/messages", {"content": f"Update {i}"}, STAFF)
            else:
                call("PUT", "/api/v1/admin/signage/door-b/content", {"zone": "hall-a", "message": f"Update {i}"}, ADMIN)
                shown = i
            if i % step == 0:
                expect(page.locator(".message")).to_have_text(f"Update {shown}", timeout=30_000)
                samples.append((i, *sample(cdp)))
        elapsed = time.monotonic() - started
        for updates, heap, nodes in samples:
            print(f"display after {updates:>6} updates: JS heap {heap / 1024:.0f} KiB, {nodes} DOM nodes")
        growth = samples[-1][1] - samples[0][1]
        print(f"display: {UPDATES} updates in {elapsed:.0f} s; heap grew {growth / 1024:.0f} KiB")
        assert growth < 2 * 1024 * 1024, f"the heap grew {growth} bytes"
        browser.close()


if __name__ == "__main__":
    run(main)
