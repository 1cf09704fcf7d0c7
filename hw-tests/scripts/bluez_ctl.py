#!/usr/bin/python3
"""Drives python-dbusmock's bluez5 template on the private system bus in DBUS_SYSTEM_BUS_ADDRESS.

  bluez_ctl.py add-adapter hci0
  bluez_ctl.py add-device hci0 C0:FF:EE:00:00:01 badge-1
  bluez_ctl.py advert hci0 C0:FF:EE:00:00:01 -60 004c 0215...c5

`advert` emits one PropertiesChanged with RSSI and ManufacturerData, the way bluetoothd reports
a received advertisement. EmitSignal is used rather than UpdateProperties because Debian 12's
dbusmock 0.28.7 cannot store dictionary-typed properties (shared/research/ble.md section 2.2).
"""
import sys
import time

import dbus

bus = dbus.SystemBus()
deadline = time.time() + 20
while not bus.name_has_owner("org.bluez"):
    if time.time() > deadline:
        sys.exit("org.bluez did not appear on the private bus within 20 s")
    time.sleep(0.05)

command, args = sys.argv[1], sys.argv[2:]
mock = dbus.Interface(bus.get_object("org.bluez", "/"), "org.bluez.Mock")
if command == "add-adapter":
    print(mock.AddAdapter(args[0], "venue-edge"))
elif command == "add-device":
    print(mock.AddDevice(args[0], args[1], args[2]))
elif command == "advert":
    adapter, mac, rssi, company, data = args
    path = "/org/bluez/%s/dev_%s" % (adapter, mac.replace(":", "_"))
    device = bus.get_object("org.bluez", path)
    # Explicit signatures: inside EmitSignal's `av`, dbus-python would otherwise guess the
    # dictionary's type from its first entry.
    changed = dbus.Dictionary(
        {
            "RSSI": dbus.Int16(int(rssi)),
            "ManufacturerData": dbus.Dictionary(
                {dbus.UInt16(int(company, 16)): dbus.Array(bytes.fromhex(data), signature="y")},
                signature="qv",
            ),
        },
        signature="sv",
    )
    device.EmitSignal(
        "org.freedesktop.DBus.Properties",
        "PropertiesChanged",
        "sa{sv}as",
        ["org.bluez.Device1", changed, dbus.Array([], signature="s")],
        dbus_interface="org.freedesktop.DBus.Mock",
    )
else:
    sys.exit("unknown command %r" % command)
