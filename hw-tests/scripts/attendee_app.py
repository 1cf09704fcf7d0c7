"""Drives the attendee app (`/`) of a running venued in Debian's headless Chromium.

Run by `hw-tests/tests/daemon/browser.rs`, which starts venued, registers the attendees and
passes what this script needs in the environment. To have venued killed (-9) and started again
on the same port, the script prints `RESTART` (or `STOP`, later `START`) and waits for a line on
stdin.

  VENUE_URL            the appliance, e.g. http://127.0.0.1:41234
  VENUE_STAFF_TOKEN    a staff token, to post announcements through the HTTP API
  VENUE_ADMIN_TOKEN    the admin token, to set up the rooms and sessions
  VENUE_SCREENSHOTS    a directory for the screenshots (phone and desktop sizes)

Every check raises AssertionError with what was expected; the exit status says whether all held.
Playwright drives /usr/bin/chromium (its own browser download does not work here).
"""

import datetime
import http.client
import http.server
import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid

from playwright.sync_api import expect, sync_playwright

from pagetest import audit, control_venued, first_load, launch, run

URL = os.environ["VENUE_URL"]
STAFF = os.environ["VENUE_STAFF_TOKEN"]
ADMIN = os.environ["VENUE_ADMIN_TOKEN"]
SHOTS = os.environ["VENUE_SCREENSHOTS"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
WRONG_PAIR = "do not match a registration"
OFFLINE = "Offline: showing what arrived before. Reconnecting…"


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


def admin_post(collection, record):
    request = urllib.request.Request(
        f"{URL}/api/v1/admin/{collection}",
        data=json.dumps(record).encode(),
        method="POST",
        headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201), f"{collection} not stored: {response.status}"


def set_up_schedule():
    """Two rooms; in Hall A a session on now and one next, relative to this minute."""
    admin_post("zones", {"id": "hall-a", "name": "Hall A", "capacity": 800})
    admin_post("zones", {"id": "hall-b", "name": "Hall B", "capacity": 120})
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    at = lambda minutes: (now + datetime.timedelta(minutes=minutes)).isoformat()
    sessions = [
        ("keynote", "Opening keynote", "hall-a", -30, 30),
        ("edge", "Rust at the edge", "hall-a", 45, 90),
        ("sync", "Offline-first sync", "hall-b", 120, 180),
    ]
    for sid, title, zone, start, end in sessions:
        admin_post("sessions", {"id": sid, "title": title, "zone_id": zone,
                                "starts_at": at(start), "ends_at": at(end)})


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te"}


class BlocksWebSockets(http.server.BaseHTTPRequestHandler):
    """A reverse proxy in front of venued that passes plain HTTP (the event stream included,
    as it arrives) and refuses every WebSocket upgrade, as some captive networks do; with
    `block_streams`, it refuses the event stream too."""

    protocol_version = "HTTP/1.0"  # one response per connection; a stream ends when it closes
    upstream = urllib.parse.urlsplit(URL)
    block_streams = False

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def log_message(self, *args):
        pass

    def forward(self):
        if self.headers.get("upgrade", "").lower() == "websocket":
            self.send_error(403, "WebSockets are blocked on this network")
            return
        if self.block_streams and self.path.startswith("/api/v1/stream"):
            self.send_error(403, "Event streams are blocked on this network")
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        self.end_headers()
        try:
            while chunk := response.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            upstream.close()


class BlocksStreams(BlocksWebSockets):
    block_streams = True


def websocket_blocking_proxy(handler=BlocksWebSockets):
    """Starts the proxy on a loopback port; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def sign_in(page, ticket, who):
    page.get_by_label("Ticket code").fill(ticket)
    page.get_by_label("Last name or email").fill(who)
    page.get_by_role("button", name="Sign in").click()


def chat_tab(page):
    """The Chat tab, whatever unread count its name carries."""
    return page.get_by_role("navigation").get_by_role("button", name=re.compile(r"^Chat"))


def open_chat(page, title):
    """Opens the conversation `title` from the chat list."""
    chat_tab(page).click()
    back = page.get_by_role("button", name="← All chats")
    if back.is_visible():
        back.click()
    page.get_by_role("list", name="Conversations").get_by_role("button", name=re.compile(re.escape(title))).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible()


def send(page, text):
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send").click()


def direct_messages_and_groups(grace, ada):
    """A direct conversation and a group between two browsers: the unread and mention badge of a
    conversation the other page had not opened, typing, read receipts, reactions, edits,
    deletes, and a group made on one phone appearing on the other."""
    grace.get_by_role("button", name="People").click()
    grace.get_by_role("button", name="Send Ada Byron a message").click()
    expect(grace.get_by_role("heading", name="Ada Byron")).to_be_visible()
    # "@Ada" is written as her id, so the appliance counts it as a mention of her.
    send(grace, "Hi @Ada, coffee after the keynote?")
    mine = grace.get_by_role("list", name="Messages").locator("li").first
    expect(mine).to_contain_text("coffee after the keynote")

    # Ada's page had no such conversation: its badge brings it, with the mention counted.
    expect(ada.get_by_role("button", name="Chat, 1 unread")).to_be_visible(timeout=2000)
    chat_tab(ada).click()
    ada.get_by_role("button", name="← All chats").click()
    listed = ada.get_by_role("list", name="Conversations").get_by_role("button", name=re.compile("Grace Lovelace"))
    expect(listed).to_contain_text("1 unread, 1 mention")
    ada.screenshot(path=os.path.join(SHOTS, "attendee-chats-desktop.png"))
    audit(ada, "chat list")
    listed.click()
    theirs = ada.get_by_role("list", name="Messages")
    expect(theirs.locator("li").first.locator("mark")).to_have_text("@You")
    # Opening it reads it: Grace sees it seen, and Ada's badge is gone.
    expect(grace.get_by_text("Seen by Ada Byron")).to_be_visible(timeout=2000)
    expect(chat_tab(ada)).to_have_text("Chat")

    # Typing shows on the other phone, and a reply ends it.
    ada.get_by_label("Message", exact=True).press_sequentially("Sure")
    expect(grace.get_by_text("Ada Byron is typing…")).to_be_visible(timeout=2000)
    ada.get_by_label("Message", exact=True).fill("Sure! By the foyer.")
    ada.get_by_role("button", name="Send").click()
    expect(grace.get_by_role("list", name="Messages")).to_contain_text("By the foyer", timeout=2000)
    expect(grace.get_by_text("Ada Byron is typing…")).to_have_count(0)

    # A reaction, an edit and a delete reach the other page live.
    first = theirs.locator("li").first
    first.get_by_text("React").click()
    first.get_by_role("button", name="React with 👍").click()
    expect(mine.get_by_role("button", name="👍 1: add or take back yours")).to_be_visible(timeout=2000)
    expect(first.get_by_role("button", name="👍 1: add or take back yours")).to_have_attribute("aria-pressed", "true")
    mine.get_by_role("button", name="Edit").click()
    grace.get_by_label("Edit your message").fill("Hi @Ada, tea after the keynote?")
    grace.get_by_role("button", name="Save").click()
    expect(first).to_contain_text("tea after the keynote? (edited)", timeout=2000)
    reply = theirs.locator("li").last
    ada.once("dialog", lambda d: d.accept())
    reply.get_by_role("button", name="Delete").click()
    expect(grace.get_by_role("list", name="Messages").locator("li").last).to_contain_text("Message deleted", timeout=2000)
    audit(grace, "direct conversation")
    grace.screenshot(path=os.path.join(SHOTS, "attendee-direct-phone.png"))

    # A group made on Grace's phone with Ada in it appears on Ada's page, and carries messages.
    grace.get_by_role("button", name="← All chats").click()
    grace.get_by_text("New group").click()
    grace.get_by_label("Group name").fill("Rust folks")
    grace.get_by_role("checkbox", name="Ada Byron").check()
    grace.get_by_role("button", name="Create group").click()
    expect(grace.get_by_role("heading", name="Rust folks")).to_be_visible()
    send(grace, "Welcome to the group")
    ada.get_by_role("button", name="← All chats").click()
    group = ada.get_by_role("list", name="Conversations").get_by_role("button", name=re.compile("Rust folks"))
    expect(group).to_contain_text("1 unread", timeout=2000)
    group.click()
    expect(ada.get_by_role("list", name="Messages")).to_contain_text("Welcome to the group")
    ada.screenshot(path=os.path.join(SHOTS, "attendee-group-desktop.png"))
    grace.get_by_role("button", name="← All chats").click()
    expect(grace.get_by_role("list", name="Conversations")).to_contain_text("Rust folks")
    grace.screenshot(path=os.path.join(SHOTS, "attendee-chats-phone.png"))


# Chromium on Linux has no BarcodeDetector (Android's and macOS's have), so the scan test gives
# the page one that "reads" a badge's QR code from any frame the real (fake-device) camera
# delivers: the camera, the video and the page's handling of what is read are the app's own.
FAKE_BARCODE_DETECTOR = """
window.BarcodeDetector = class {
  constructor(options) { this.formats = options.formats; }
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect(video) {
    if (!this.formats.includes("qr_code") || !video.videoWidth) return [];
    return [{ format: "qr_code", rawValue: "http://venue-edge.local/?ticket=T3" }];
  }
};
"""


def ticket_links_and_scans(browser):
    """The QR code on a badge carries a link with the ticket code: opened by the phone's camera
    app, it fills the code in (and leaves the address bar); scanned in the app, likewise."""
    linked = browser.new_context(viewport=PHONE).new_page()
    linked.goto(f"{URL}/?ticket=T2")
    expect(linked.get_by_label("Ticket code")).to_have_value("T2")
    expect(linked.get_by_label("Last name or email")).to_be_focused()
    assert "ticket=" not in linked.url, f"the ticket code stayed in the address bar: {linked.url}"
    # Where the browser cannot scan (no BarcodeDetector here), no button promises it.
    expect(linked.get_by_role("button", name="Scan the QR code on your badge")).to_have_count(0)
    linked.get_by_label("Last name or email").fill("Byron")
    linked.get_by_role("button", name="Sign in").click()
    expect(linked.get_by_role("heading", name="Announcements")).to_be_visible()

    scanning = browser.new_context(viewport=PHONE)
    scanning.grant_permissions(["camera"])
    scanning.add_init_script(FAKE_BARCODE_DETECTOR)
    scanner = scanning.new_page()
    scanner.goto(URL + "/")
    scanner.get_by_role("button", name="Scan the QR code on your badge").click()
    expect(scanner.get_by_label("Ticket code")).to_have_value("T3", timeout=5000)
    expect(scanner.get_by_label("Last name or email")).to_be_focused()
    expect(scanner.locator("video")).to_have_count(0)
    scanning.close()


def main():
    set_up_schedule()
    with sync_playwright() as p:
        browser = launch(p)
        phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        page = phone.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # Chromium logs every 4xx answer and every refused connection as a console error; the
        # wrong pairs (401), the budget (429) and the appliance stopped on purpose (refused) are
        # expected here, anything else is not.
        expected = ("status of 401", "status of 429", "ERR_CONNECTION_REFUSED")
        page.on(
            "console",
            lambda m: m.type == "error"
            and not any(e in m.text for e in expected)
            and errors.append(m.text),
        )

        # Signed out: the form, and a wrong pair says so without saying which half.
        page.goto(URL + "/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        first_load(page, "attendee app")
        sign_in(page, "T1", "Nobody")
        expect(page.get_by_role("alert")).to_contain_text(WRONG_PAIR)
        sign_in(page, "NO-SUCH-TICKET", "Lovelace")
        expect(page.get_by_role("alert")).to_contain_text(WRONG_PAIR)
        page.screenshot(path=os.path.join(SHOTS, "attendee-sign-in-phone.png"))
        audit(page, "sign-in")

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
        audit(page, "announcements")

        # The schedule: each room with what is on now and next, and its occupancy.
        page.get_by_role("button", name="Agenda").click()
        hall = page.get_by_role("article", name="Hall A")
        expect(hall).to_contain_text("Now: Opening keynote")
        expect(hall).to_contain_text("Next: Rust at the edge")
        expect(hall).to_contain_text("0 of 800 seats taken")
        hall_b = page.get_by_role("article", name="Hall B")
        expect(hall_b).to_contain_text("Nothing on now")
        expect(hall_b).to_contain_text("Next: Offline-first sync")
        page.screenshot(path=os.path.join(SHOTS, "attendee-schedule-phone.png"))
        audit(page, "schedule")

        # "You": not checked in yet; the privacy level is the attendee's own to set, and stays.
        page.get_by_role("button", name="You").click()
        expect(page.get_by_text("Not checked in yet")).to_be_visible()
        nobody = page.get_by_label("Nobody: not your status, not your location")
        nobody.check()
        expect(page.locator("#me-status")).to_have_text("Saved.")
        audit(page, "you")
        page.screenshot(path=os.path.join(SHOTS, "attendee-you-phone.png"))
        page.reload()
        page.get_by_role("button", name="You").click()
        expect(nobody).to_be_checked()
        page.get_by_label("The room you are in").check()
        expect(page.locator("#me-status")).to_have_text("Saved.")
        page.get_by_role("button", name="News").click()

        # venued killed and restarted: the page reconnects by itself and resumes; what staff
        # posted before the page was back shows, once, and nothing shown before is doubled.
        control_venued("RESTART")
        after = "Lunch is served in the foyer"
        announce(after)
        expect(feed.locator("li").first).to_contain_text(after, timeout=20_000)
        expect(page.locator("#link")).to_have_text("Live")
        expect(feed.locator("li")).to_have_count(3)
        expect(feed.get_by_text(after)).to_have_count(1)

        desktop = browser.new_context(viewport=DESKTOP)
        wide = desktop.new_page()
        wide.goto(URL + "/")
        sign_in(wide, "T2", "ada@example.org")
        expect(wide.get_by_role("list", name="Announcements").locator("li")).to_have_count(3)
        wide.screenshot(path=os.path.join(SHOTS, "attendee-announcements-desktop.png"))

        # A session's chat, between two browsers: sent on one, shown on the other.
        wide.get_by_role("button", name="Agenda").click()
        expect(wide.get_by_role("article", name="Hall A")).to_contain_text("Now: Opening keynote")
        wide.screenshot(path=os.path.join(SHOTS, "attendee-schedule-desktop.png"))
        for p in (page, wide):
            p.get_by_role("button", name="Agenda").click()
            p.get_by_role("button", name="Chat about Opening keynote").click()
            expect(p.get_by_role("heading", name="Opening keynote")).to_be_visible()
        page.get_by_label("Message", exact=True).fill("Are the slides online?")
        page.get_by_role("button", name="Send").click()
        their_chat = wide.get_by_role("list", name="Messages")
        expect(their_chat).to_contain_text("Are the slides online?", timeout=2000)
        expect(page.get_by_role("list", name="Messages")).to_contain_text("Are the slides online?")
        audit(page, "chat")
        page.screenshot(path=os.path.join(SHOTS, "attendee-chat-phone.png"))

        # People: Grace follows Ada (open on the desktop) and sees her online; when Ada hides
        # herself in her own app, Grace's page stops showing anything about her at once.
        page.get_by_role("button", name="People").click()
        page.get_by_label("Find people by name").fill("Byr")
        page.get_by_role("button", name="Find", exact=True).click()
        page.get_by_role("button", name="Follow Ada Byron").click()
        following = page.get_by_role("list", name="People you follow")
        expect(following).to_contain_text("Ada Byron")
        expect(following).to_contain_text("online", timeout=2000)
        audit(page, "people")
        page.screenshot(path=os.path.join(SHOTS, "attendee-people-phone.png"))
        wide.get_by_role("button", name="You").click()
        wide.get_by_label("Nobody: not your status, not your location").check()
        expect(following).to_contain_text("Not sharing where they are", timeout=2000)
        expect(following).not_to_contain_text("online")
        direct_messages_and_groups(page, wide)
        for p in (page, wide):
            open_chat(p, "Opening keynote")

        # Typed while the appliance cannot be reached: it waits on the phone, and goes out once
        # when the appliance answers again.
        control_venued("STOP")
        page.get_by_label("Message", exact=True).fill("Typed in a dead spot")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_role("list", name="Messages")).to_contain_text("Waiting for the network")
        page.get_by_role("button", name="News").click()

        # A dead spot: the appliance unreachable. A reload still opens the app (the service
        # worker keeps the shell) with the announcements it had; it catches up once back.
        page.wait_for_function("navigator.serviceWorker.controller !== null")
        page.reload()
        expect(page.locator("#link")).to_have_text(OFFLINE, timeout=10_000)
        expect(feed.locator("li")).to_have_count(3)
        expect(feed.locator("li").first).to_contain_text(after)
        page.screenshot(path=os.path.join(SHOTS, "attendee-offline-phone.png"))
        control_venued("START")
        back = "Doors open again"
        announce(back)
        expect(feed.locator("li").first).to_contain_text(back, timeout=20_000)
        expect(page.locator("#link")).to_have_text("Live")
        expect(feed.locator("li")).to_have_count(4)
        expect(their_chat.get_by_text("Typed in a dead spot")).to_have_count(1, timeout=20_000)
        wide.reload()
        wide.get_by_role("button", name="Agenda").click()
        wide.get_by_role("button", name="Chat about Opening keynote").click()
        expect(their_chat.locator("li")).to_have_count(2)
        expect(their_chat.get_by_text("Typed in a dead spot")).to_have_count(1)

        # WebSockets blocked on the way (as on some captive networks): the page falls back to the
        # event stream and still gets every announcement, live.
        proxy = websocket_blocking_proxy()
        blocked = browser.new_context(viewport=PHONE)
        sse = blocked.new_page()
        streams = []
        sse.on("request", lambda r: "/api/v1/stream?" in r.url and streams.append(r.url))
        sse.goto(proxy + "/")
        sign_in(sse, "T2", "Byron")
        sse_feed = sse.get_by_role("list", name="Announcements")
        expect(sse_feed.locator("li")).to_have_count(4, timeout=20_000)
        expect(sse.locator("#link")).to_have_text("Live")
        assert streams, "the page did not open the event stream"
        over_sse = "Shuttle buses leave at 18:00"
        announce(over_sse)
        expect(sse_feed.locator("li").first).to_contain_text(over_sse, timeout=2000)
        expect(sse_feed.locator("li")).to_have_count(5)

        # Neither WebSockets nor event streams get through: the page long-polls, and still gets
        # every announcement, and the chat still sends.
        polling_proxy = websocket_blocking_proxy(BlocksStreams)
        polled = browser.new_context(viewport=PHONE).new_page()
        polls = []
        polled.on("request", lambda r: "/api/v1/poll?" in r.url and polls.append(r.url))
        polled.goto(polling_proxy + "/")
        sign_in(polled, "T2", "Byron")
        polled_feed = polled.get_by_role("list", name="Announcements")
        expect(polled_feed.locator("li")).to_have_count(5, timeout=30_000)
        expect(polled.locator("#link")).to_have_text("Live")
        assert polls, "the page did not long-poll"
        over_poll = "Last shuttle at 23:00"
        announce(over_poll)
        expect(polled_feed.locator("li").first).to_contain_text(over_poll, timeout=2000)
        expect(polled_feed.locator("li")).to_have_count(6)
        polled.get_by_role("button", name="Agenda").click()
        polled.get_by_role("button", name="Chat about Opening keynote").click()
        send(polled, "Sent while long-polling")
        expect(their_chat.get_by_text("Sent while long-polling")).to_have_count(1, timeout=2000)
        expect(polled.get_by_role("list", name="Messages").get_by_text("Sent while long-polling")).to_have_count(1)

        ticket_links_and_scans(browser)

        # A token from elsewhere (the organiser's email) as a link: signed in, and the token taken
        # out of the address bar so it is not bookmarked or shared by accident.
        linked = browser.new_context(viewport=PHONE).new_page()
        linked.goto(f"{URL}/?token={STAFF}")
        expect(linked.get_by_role("heading", name="Announcements")).to_be_visible()
        assert "token=" not in linked.url, f"the token stayed in the address bar: {linked.url}"

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
    run(main)
