//! The appliance found by name on the LAN (mDNS/DNS-SD), tested on a "venue LAN" of two network
//! namespaces this test creates and joins with a veth pair: venued advertises in one, a phone-like
//! browser (python-zeroconf, `hw-tests/scripts/mdns_find.py`) looks in the other. Nothing is
//! multicast on the machine's real interfaces (every other test runs venued with mDNS off).
//! Creating namespaces needs root (CAP_NET_ADMIN) and iproute2, as CI has.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hw_tests::VenuedBuilder;
use serde_json::Value;

/// Two network namespaces joined by a veth pair; removed on drop.
struct Lan {
    appliance: String,
    phone: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    /// `10.77.0.1` (the appliance) and `10.77.0.2` (the phone).
    fn new() -> Lan {
        // Unique per test in this process too: the tests of this module run side by side.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let tag = std::process::id() % 10_000 * 10 + n;
        let lan = Lan {
            appliance: format!("ve-box-{tag}"),
            phone: format!("ve-phone-{tag}"),
        };
        let (veth_box, veth_phone) = (format!("veb{tag}"), format!("vep{tag}"));
        ip(&["netns", "add", &lan.appliance]);
        ip(&["netns", "add", &lan.phone]);
        ip(&[
            "link",
            "add",
            &veth_box,
            "type",
            "veth",
            "peer",
            "name",
            &veth_phone,
        ]);
        ip(&["link", "set", &veth_box, "netns", &lan.appliance]);
        ip(&["link", "set", &veth_phone, "netns", &lan.phone]);
        for (ns, dev, addr) in [
            (&lan.appliance, &veth_box, "10.77.0.1/24"),
            (&lan.phone, &veth_phone, "10.77.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair with it.
        for ns in [&self.appliance, &self.phone] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[tokio::test]
async fn a_phone_on_the_lan_finds_the_appliance_by_name_and_reaches_it() {
    let lan = Lan::new();
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .in_netns(&lan.appliance)
        .env("VENUED_MDNS_ENABLED", "true")
        .env("VENUED_MDNS_HOSTNAME", "venue-edge-hall-a")
        .env("VENUED_EVENT_ID", "conf-2026")
        .env("VENUED_HTTP_LISTEN", "0.0.0.0:8080")
        .env("VENUED_MQTT_LISTEN", "0.0.0.0:1883")
        .spawn()
        .await
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/mdns_find.py");
    let python = hw_tests::s3::tool("python3");
    let find = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lan.phone])
        .arg(&python)
        .arg(&script)
        .args(["10.77.0.2", "10"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .expect("the browse ends within a minute")
        .expect("python3 from target/test-venv runs (scripts/test installs zeroconf there)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nothing found: {text}{}\nvenued log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        venued.log()
    );
    let found: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(found["name"], "venue-edge-hall-a._venue-edge._tcp.local.");
    assert_eq!(found["server"], "venue-edge-hall-a.local.");
    assert_eq!(found["port"], 8080);
    assert_eq!(
        found["addresses"],
        serde_json::json!(["10.77.0.1"]),
        "{found}"
    );
    assert_eq!(found["properties"]["mqtt"], "1883");
    assert_eq!(found["properties"]["event"], "conf-2026");
    assert_eq!(found["properties"]["node"], venued_node(&dir));
    assert_eq!(
        found["healthz"]["status"], "ok",
        "reached by the address it announced"
    );
}

fn venued_node(dir: &tempfile::TempDir) -> String {
    hw_tests::open_db(&dir.path().join("data"))
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// The console's "find printers": an IPP printer announcing itself by DNS-SD on the venue LAN
/// (python-zeroconf in the other namespace, as a printer's own responder would) is found by
/// `GET /api/v1/admin/printers/discover` with the address to register.
#[tokio::test]
async fn the_console_finds_ipp_printers_on_the_lan() {
    let lan = Lan::new();
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .in_netns(&lan.appliance)
        .env("VENUED_MDNS_ENABLED", "true")
        .env("VENUED_HTTP_LISTEN", "0.0.0.0:8080")
        .spawn()
        .await
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/ipp_announce.py");
    let python = hw_tests::s3::tool("python3");
    let announce = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lan.phone])
        .arg(&python)
        .arg(&script)
        .args(["10.77.0.2", "http://10.77.0.1:8080", &venued.admin_token()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), announce)
        .await
        .expect("the search ends within a minute")
        .expect("python3 from target/test-venv runs (scripts/test installs zeroconf there)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "no answer: {text}{}\nvenued log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        venued.log()
    );
    let found: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        found["printers"],
        serde_json::json!([{
            "name": "Desk Label Printer._ipp._tcp.local.",
            "model": "Example LabelWriter 4XL",
            "uri": "ipp://10.77.0.2:631/ipp/print",
            "formats": "application/pdf,image/pwg-raster",
        }]),
        "{found}"
    );
}

/// Two boxes of one event with the venue key, each in its own namespace of the "venue LAN" and
/// no `[peers] urls`: they find each other by mDNS (`_venue-sync._tcp`) and sync. A's demo
/// attendees reach B, and each pulls from the other's announced address.
#[tokio::test]
async fn two_boxes_of_one_event_find_each_other_on_the_lan_and_sync() {
    let lan = Lan::new();
    let dir = tempfile::tempdir().unwrap();
    let start = |ns: &str, name: &str| {
        VenuedBuilder::new(&dir.path().join(name))
            .in_netns(ns)
            .env("VENUED_MDNS_ENABLED", "true")
            .env("VENUED_MDNS_HOSTNAME", name)
            .env("VENUED_EVENT_ID", "conf-2026")
            .env("VENUED_HTTP_LISTEN", "0.0.0.0:8080")
            .env("VENUED_MQTT_ENABLED", "false")
            .env("VENUED_PEERS_KEY", "the-venue-key-of-conf-2026-0123456789")
    };
    let a = start(&lan.appliance, "hall-a")
        .arg("--demo")
        .spawn()
        .await
        .unwrap();
    let b = start(&lan.phone, "hall-b").spawn().await.unwrap();
    let attendees = |data: &std::path::Path| -> i64 {
        hw_tests::open_db(data)
            .unwrap()
            .query_row("SELECT count(*) FROM attendees", [], |r| r.get(0))
            .unwrap()
    };
    let on_a = attendees(&a.data_dir);
    assert!(on_a > 0, "the demo seeds attendees");
    let started = std::time::Instant::now();
    while attendees(&b.data_dir) < on_a {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "B never got A's attendees; B's log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each found the other where it announced itself, and keeps a cursor for it.
    let cursor_of = |data: &std::path::Path, node: &str| -> Option<i64> {
        hw_tests::open_db(data)
            .unwrap()
            .query_row(
                "SELECT cursor FROM peer_cursors WHERE node = ?1",
                [node],
                |r| r.get(0),
            )
            .ok()
    };
    let node = |data: &std::path::Path| -> String {
        hw_tests::open_db(data)
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    assert!(cursor_of(&b.data_dir, &node(&a.data_dir)).is_some_and(|c| c > 0));
    assert!(
        b.log().contains("http://10.77.0.1:8080"),
        "B pulls from A's LAN address: {}",
        b.log()
    );
    while cursor_of(&a.data_dir, &node(&b.data_dir)).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "A never pulled from B; A's log:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
