"""Looks for a venue appliance on the LAN the way a phone or a kiosk would: browses DNS-SD for
`_venue-edge._tcp`, resolves the instance (SRV, TXT, and the host's A records), then fetches
`/healthz` from the address found. Prints what it found as JSON; exits 1 if nothing answered.

Run by `hw-tests/tests/daemon/mdns.rs` inside a network namespace it created (`ip netns exec`),
so its multicast never leaves that namespace. Usage: mdns_find.py <bind address> <seconds>
"""

import json
import sys
import time
import urllib.request

from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

SERVICE = "_venue-edge._tcp.local."


class Found(ServiceListener):
    def __init__(self):
        self.names = []

    def add_service(self, zc, type_, name):
        self.names.append(name)

    def update_service(self, zc, type_, name):
        pass

    def remove_service(self, zc, type_, name):
        pass


def main():
    bind, seconds = sys.argv[1], float(sys.argv[2])
    zc = Zeroconf(interfaces=[bind])
    try:
        found = Found()
        ServiceBrowser(zc, SERVICE, found)
        deadline = time.monotonic() + seconds
        while not found.names and time.monotonic() < deadline:
            time.sleep(0.1)
        if not found.names:
            print(json.dumps({"error": f"no {SERVICE} answered within {seconds} s"}))
            return 1
        name = found.names[0]
        info = zc.get_service_info(SERVICE, name, timeout=int(seconds * 1000))
        if info is None:
            print(json.dumps({"error": f"{name} did not resolve"}))
            return 1
        addresses = info.parsed_addresses()
        properties = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        health = None
        if addresses:
            url = f"http://{addresses[0]}:{info.port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as r:
                health = json.loads(r.read())
        print(json.dumps({
            "name": name,
            "server": info.server,
            "port": info.port,
            "addresses": addresses,
            "properties": properties,
            "healthz": health,
        }))
        return 0
    finally:
        zc.close()


if __name__ == "__main__":
    sys.exit(main())
