//! The systemd protocol (READY, WATCHDOG, STOPPING over a real notify socket) and the unit file.

use std::process::Command;
use std::time::Duration;

use hw_tests::VenuedBuilder;

#[tokio::test]
async fn notifies_ready_then_watchdog_pings_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // 400 ms watchdog: venued must ping every 200 ms.
    let mut venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("WATCHDOG_USEC", "400000")
        .spawn()
        .await
        .unwrap();
    let ready = venued.notifications.last().cloned().unwrap_or_default();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains("STATUS=serving on http://127.0.0.1:"),
        "{ready}"
    );
    // READY means listening: the first request right after it succeeds.
    let response = reqwest::get(venued.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 200);

    let mut pings = 0;
    while pings < 3 {
        let message = venued
            .next_notification(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a watchdog ping within 5 s");
        assert_eq!(message.trim(), "WATCHDOG=1");
        pings += 1;
    }

    venued.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    loop {
        let message = venued
            .next_notification(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("STOPPING=1 after SIGTERM");
        if message.contains("STOPPING=1") {
            break;
        }
        assert_eq!(
            message.trim(),
            "WATCHDOG=1",
            "only pings may precede STOPPING"
        );
    }
    let exit = venued.wait(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success(), "{exit:?}\n{}", venued.log());
}

#[tokio::test]
async fn a_watchdog_for_another_pid_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .spawn()
        .await
        .unwrap();
    let message = venued
        .next_notification(Duration::from_millis(600))
        .await
        .unwrap();
    assert_eq!(message, None, "no pings for a watchdog meant for pid 1");
}

fn unit_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/venued.service")
}

#[test]
fn unit_file_verifies() {
    // `verify` also checks that ExecStart exists; on a build machine venued is not installed in
    // /usr/bin, so verify the same unit with ExecStart pointing at the built binary.
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/venued\n"));
    let built = hw_tests::binary("venued");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("venued.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/venued",
            &format!("ExecStart={}", built.display()),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package `systemd`) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Outside a booted systemd the default targets are missing; that is the machine, not the unit.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Unit sysinit.target not found"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {problems:#?}");
}

#[test]
fn unit_exposure_score_is_at_most_2() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_path())
        .output()
        .expect("systemd-analyze must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for venued.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0");
}
