"""Announces an IPP Everywhere printer on the LAN by DNS-SD (`_ipp._tcp`, with the TXT keys
printers send: rp, ty, pdl), then asks the appliance's console API to find printers, and prints
its answer as JSON.

Run by `hw-tests/tests/daemon/mdns.rs` inside a network namespace it created (`ip netns exec`),
so its multicast never leaves that namespace.
Usage: ipp_announce.py <bind address> <appliance URL> <admin token>
"""

import socket
import sys
import urllib.request

from zeroconf import ServiceInfo, Zeroconf


def main():
    bind, appliance, token = sys.argv[1], sys.argv[2], sys.argv[3]
    zc = Zeroconf(interfaces=[bind])
    info = ServiceInfo(
        "_ipp._tcp.local.",
        "Desk Label Printer._ipp._tcp.local.",
        addresses=[socket.inet_aton(bind)],
        port=631,
        properties={"rp": "ipp/print", "ty": "Example LabelWriter 4XL", "pdl": "application/pdf,image/pwg-raster"},
        server="desk-printer.local.",
    )
    zc.register_service(info)
    try:
        request = urllib.request.Request(f"{appliance}/api/v1/admin/printers/discover?secs=4",
                                         headers={"authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
    finally:
        zc.unregister_service(info)
        zc.close()


if __name__ == "__main__":
    main()
