//! With `log.output = "journal"`, venued's events reach a real journald as structured fields.
//!
//! Uses the machine's journald when one answers on its socket. Otherwise (CI containers have no
//! systemd as PID 1) it starts Debian's `systemd-journald` for the test, which needs root; the
//! test command runs as root there.

use std::os::unix::net::UnixDatagram as StdDatagram;
use std::process::Stdio;
use std::time::Duration;

use hw_tests::VenuedBuilder;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
const JOURNALD: &str = "/lib/systemd/systemd-journald";

fn journal_answers() -> bool {
    StdDatagram::unbound()
        .and_then(|s| s.connect(JOURNAL_SOCKET))
        .is_ok()
}

/// A journald to log to: `None` when the machine's own is running, else one started here (and
/// stopped when the returned child is dropped).
async fn journald() -> Option<(Child, tempfile::TempDir)> {
    if journal_answers() {
        return None;
    }
    std::fs::create_dir_all("/run/systemd/journal")
        .expect("no journald runs here and /run/systemd/journal cannot be created (run as root)");
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let child = Command::new(JOURNALD)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {JOURNALD} (Debian package systemd): {e}"));
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf))
            .await
            .expect("systemd-journald sent no READY=1 within 20 s")
            .unwrap();
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    Some((child, dir))
}

#[tokio::test]
async fn events_reach_journald_with_structured_fields() {
    let _journald = journald().await;
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("VENUED_LOG_OUTPUT", "journal")
        .spawn()
        .await
        .unwrap();
    let pid = venued.pid();
    let status: serde_json::Value = reqwest::get(venued.url("/api/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node_id = status["node_id"].as_str().unwrap().to_string();
    assert!(
        !venued.log().contains("venued listening"),
        "with the journal as output, nothing goes to stderr"
    );

    // Follow the journal for this process until the start-up event arrives.
    let mut journalctl = Command::new("journalctl")
        .args(["--follow", "--output=json", "--no-pager", "--lines=all"])
        .arg(format!("_PID={pid}"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("journalctl");
    let mut lines = BufReader::new(journalctl.stdout.take().unwrap()).lines();
    let entry = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
            if entry["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("venued listening on http://"))
            {
                return entry;
            }
        }
        panic!("journalctl ended without the start-up event");
    })
    .await
    .expect("the start-up event reached the journal within 20 s");

    assert_eq!(entry["SYSLOG_IDENTIFIER"], "venued");
    assert_eq!(
        entry["NODE_ID"],
        node_id.as_str(),
        "event fields are journal fields"
    );
    assert_eq!(entry["VENUED_VERSION"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        entry["PRIORITY"], "5",
        "info maps to the journal's notice priority"
    );
    assert!(
        entry["CODE_FILE"]
            .as_str()
            .is_some_and(|f| f.ends_with("main.rs"))
    );
    venued.terminate(Duration::from_secs(10)).await.unwrap();
}
