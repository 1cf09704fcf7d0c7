//! The pages in a real browser: Debian's headless Chromium driven by Python Playwright
//! (`hw-tests/scripts/attendee_app.py`) against a real `venued`. `scripts/test` installs both
//! (the `chromium` package, and `playwright` into `target/test-venv`) and runs these on their own
//! with `--ignored`: a browser loads both cores, which would slow the timing-sensitive tests
//! beside it, and the page's 1 s announcement check would then measure the machine.

use std::path::PathBuf;
use std::time::Duration;

use hw_tests::{Admin, VenuedBuilder};

/// Where the tests leave the screenshots (`docs/screenshots/` holds the copies shown in the
/// README, refreshed from here).
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The attendee app: sign-in with wrong and right pairs and the per-ticket budget, the session
/// kept across a reload, and an announcement posted by staff over HTTP shown within 1 s.
#[tokio::test]
#[ignore = "run alone by scripts/test (a browser loads the machine)"]
async fn the_attendee_app_signs_in_and_shows_announcements_live() {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    admin
        .import_csv(
            "id,name,email,ticket_code\n\
             a1,Grace Lovelace,,T1\n\
             a2,Ada Byron,ada@example.org,T2\n\
             a3,Grace Hopper,,T3\n\
             staff1,Desk Staff,,S1\n"
                .into(),
        )
        .await
        .unwrap();
    let (status, minted) = admin
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(serde_json::json!({"attendee_id": "staff1", "roles": ["staff"]})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{minted}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/attendee_app.py");
    let run = tokio::process::Command::new(hw_tests::s3::tool("python3"))
        .arg(&script)
        .env("VENUE_URL", venued.url(""))
        .env("VENUE_STAFF_TOKEN", minted["token"].as_str().unwrap())
        .env("VENUE_SCREENSHOTS", screenshots())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser run ends within 3 minutes")
        .expect("python3 from target/test-venv runs (scripts/test installs playwright there)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the attendee app failed in Chromium:\n{stdout}\n{stderr}\nvenued log:\n{}",
        venued.log()
    );
}
