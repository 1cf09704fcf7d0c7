"""Drives venue IT's console (`/console`) of a running venued in Debian's headless Chromium.

Run by `hw-tests/tests/daemon/browser.rs` (`drive`), which starts venued with BLE playing a
25 s recording, registers kiosk `desk-1` and passes:

  VENUE_URL              the appliance, e.g. http://127.0.0.1:41234
  VENUE_ADMIN_TOKEN      the admin token
  VENUE_KIOSK_PASSWORD   desk-1's password (this script connects it over MQTT, then drops it)
  VENUE_MQTT_PORT        the broker's MQTT port on 127.0.0.1
  VENUE_SCREENSHOTS      a directory for the screenshots

Every check raises AssertionError with what was expected; the exit status says whether all held.
"""

import json
import os
import socket
import subprocess
import tempfile
import urllib.request

import paho.mqtt.client as paho
from playwright.sync_api import expect, sync_playwright

from pagetest import audit, first_load, launch, run

URL = os.environ["VENUE_URL"]
ADMIN = os.environ["VENUE_ADMIN_TOKEN"]
KIOSK_PASSWORD = os.environ["VENUE_KIOSK_PASSWORD"]
MQTT_PORT = int(os.environ["VENUE_MQTT_PORT"])
SHOTS = os.environ["VENUE_SCREENSHOTS"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
STATUS = "venue/default/kiosk/desk-1/status"


def kiosk_online():
    """desk-1 as kiosk firmware would be: a retained `ready` status, a `lost` will."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="desk-1")
    client.username_pw_set("desk-1", KIOSK_PASSWORD)
    client.will_set(STATUS, json.dumps({"v": 1, "state": "lost"}), qos=1, retain=True)
    client.connect("127.0.0.1", MQTT_PORT, keepalive=5)
    client.loop_start()
    client.publish(STATUS, json.dumps({"v": 1, "state": "ready"}), qos=1, retain=True).wait_for_publish(10)
    return client


def vanish(client):
    """The kiosk's network goes away: no DISCONNECT, the socket just closes."""
    client.loop_stop()
    client.socket().close()


def decode_qr(locator):
    """What a phone's camera reads from the QR code on screen (zbarimg on a screenshot)."""
    with tempfile.NamedTemporaryFile(suffix=".png") as shot:
        locator.screenshot(path=shot.name)
        out = subprocess.run(["zbarimg", "--raw", "-q", shot.name], capture_output=True, text=True, check=False)
        assert out.returncode == 0, f"no QR code read from the screen: {out.stderr}"
        return out.stdout.strip()


def main():
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport=DESKTOP).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # 401: the wrong token; 422: the bad CSV; 409: finding printers with mDNS off.
        page.on("console", lambda m: m.type == "error" and "status of 401" not in m.text
                and "status of 422" not in m.text and "status of 409" not in m.text
                and errors.append(m.text))

        # The admin token, and nothing without it.
        page.goto(URL + "/console")
        expect(page.get_by_role("heading", name="Sign in with the admin token")).to_be_visible()
        first_load(page, "console")
        page.get_by_label("Admin token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not this appliance's admin token")
        audit(page, "console sign-in")
        page.get_by_label("Admin token").fill(ADMIN)
        page.get_by_role("button", name="Sign in").click()
        subsystems = page.get_by_role("table", name="Each part of the appliance and its state.")
        expect(subsystems.get_by_role("row", name="store")).to_contain_text("ok")
        ble = subsystems.get_by_role("row", name="ble")
        expect(ble).to_contain_text("ok")
        # In the image: the slot and release, and the provisioning file the box refused, first.
        refused = page.get_by_role("alert").filter(has_text="Provisioning file not applied")
        expect(refused).to_contain_text("runs on the configuration it had before")
        expect(refused).to_contain_text("`event.id`: `bad id!` is not an id")
        appliance = page.get_by_role("region", name="Appliance")
        expect(appliance).to_contain_text("1.4.2, slot B")
        scanners = page.get_by_role("table", name="Each scanner: adverts a second, and when it last heard one.")
        expect(scanners.get_by_role("row", name="scanner-a")).to_contain_text("s ago", timeout=5000)

        # The venue's other box (nothing listens there): unreachable, with the reason.
        peers = page.get_by_role("table", name="Each other box of the venue: whether this one reaches it, and how far behind it is.")
        other = peers.locator("tr[data-peer='http://127.0.0.1:9']")
        expect(other).to_contain_text("unreachable", timeout=10_000)
        expect(other).to_contain_text("peer unreachable")

        # A kiosk comes online, then its network goes: offline, without a reload.
        devices = page.get_by_role("table", name="Kiosks, displays and gateways: online while connected over MQTT.")
        desk = devices.locator("tr[data-device='desk-1']")
        expect(desk).to_contain_text("not seen yet")
        kiosk = kiosk_online()
        expect(desk).to_contain_text("online", timeout=5000)
        expect(desk).to_contain_text("s ago")  # when it was last heard of
        page.screenshot(path=os.path.join(SHOTS, "console-desktop.png"), full_page=True)
        audit(page, "console")
        vanish(kiosk)
        expect(desk).to_contain_text("offline", timeout=30_000)

        # The BLE recording ends: degraded, with the reason, without a reload.
        expect(ble).to_contain_text("degraded", timeout=60_000)
        expect(ble).to_contain_text("the advert source ended")

        # An import with bad lines: each line's error, and nothing written.
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("id,name,privacy\na1,Ada Byron,zone\na2,Grace Hopper,sometimes\n,No Id,venue\n")
            bad = f.name
        page.get_by_label("File", exact=True).set_input_files(bad)
        page.get_by_role("button", name="Import").click()
        problems = page.get_by_role("list", name="Problems in the file")
        expect(problems.locator("li")).to_have_count(2)
        expect(problems.locator("li").nth(0)).to_contain_text("line 3")
        expect(problems.locator("li").nth(1)).to_contain_text("line 4")
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("id,name,ticket_code\na1,Ada Byron,T1\na2,Grace Hopper,T2\n")
            good = f.name
        page.get_by_label("File", exact=True).set_input_files(good)
        page.get_by_role("button", name="Import").click()
        expect(page.get_by_text("Imported 2 attendees.")).to_be_visible()

        # Registering a kiosk: the password once, and a QR code that sets the tablet up.
        page.get_by_label("Device id", exact=True).fill("desk-2")
        page.locator("#device-new-kind").select_option("kiosk")
        page.get_by_label("Name", exact=True).fill("Desk 2")
        page.get_by_role("button", name="Register").click()
        password = page.locator(".once .password").text_content()
        assert password and len(password) >= 16, f"no password shown: {password!r}"
        qr = page.get_by_role("img", name="QR code that sets up desk-2")
        read = decode_qr(qr)
        assert read == f"{URL}/kiosk#id=desk-2&password={password}", f"the QR code says {read!r}"
        page.get_by_role("button", name="Done, hide it").click()
        expect(page.locator(".once")).to_have_count(0)
        tablet = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
        tablet.goto(read)
        expect(tablet.locator(".result")).to_contain_text("Ready")
        assert "password" not in tablet.url, f"the password stayed in the address bar: {tablet.url}"
        tablet.keyboard.type("T1")
        tablet.keyboard.press("Enter")
        expect(tablet.locator(".result")).to_contain_text("Welcome, Ada Byron!")

        # A display's content, and an announcement.
        page.get_by_label("Display", exact=True).fill("door-1")
        page.locator("#signage-content").fill('{"zone": "hall-a", "message": "Doors close at 10:05"}')
        page.get_by_role("button", name="Set content").click()
        expect(page.get_by_text("Set. The display shows it now.")).to_be_visible()
        request = urllib.request.Request(f"{URL}/api/v1/admin/signage/door-1/content",
                                         headers={"authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            stored = json.load(response)
        assert stored["content"]["message"] == "Doors close at 10:05", stored
        page.locator("#announcement").fill("Coffee is in the foyer")
        page.get_by_role("button", name="Post to everyone").click()
        expect(page.get_by_text("Posted.")).to_be_visible()

        # A badge printer: a ZPL port this script listens on. Added in the console, it shows ready;
        # when the port closes (the printer switched off), offline, without a reload.
        zebra = socket.socket()
        zebra.bind(("127.0.0.1", 0))
        zebra.listen(16)
        # Tests run venued with mDNS off: finding printers says so rather than multicasting.
        page.get_by_role("button", name="Find printers on the network").click()
        expect(page.get_by_role("list", name="Printers found on the network")).to_contain_text("mDNS is off")
        page.get_by_label("Printer id").fill("zebra-1")
        page.locator("#printer-kind").select_option("zpl")
        page.get_by_label("Address").fill(f"tcp://127.0.0.1:{zebra.getsockname()[1]}")
        page.get_by_label("Kiosks (ids, comma-separated)").fill("desk-2")
        page.get_by_role("button", name="Add printer").click()
        expect(page.get_by_text("Added zebra-1.")).to_be_visible()
        printers = page.get_by_role("table", name="Each printer: its state, what it says, its supplies, and when it was last asked.")
        row = printers.locator('tr[data-printer="zebra-1"]')
        expect(row.locator("td").first).to_have_text("ready", timeout=15_000)
        zebra.close()
        expect(row.locator("td").first).to_have_text("offline", timeout=15_000)
        expect(row.locator("td").first).to_have_class("state-offline")
        expect(row).to_contain_text("printer unreachable")

        phone = browser.new_context(viewport=PHONE).new_page()
        phone.goto(URL + "/console")
        phone.get_by_label("Admin token").fill(ADMIN)
        phone.get_by_role("button", name="Sign in").click()
        expect(phone.get_by_role("table", name="Each part of the appliance and its state.")).to_be_visible()
        phone.screenshot(path=os.path.join(SHOTS, "console-phone.png"))

        assert not errors, f"errors in the page: {errors}"
        browser.close()
    print("console: all checks passed")


if __name__ == "__main__":
    run(main)
