//! The README's run command: plain `venued`, embedded defaults, no external service.

use std::time::Duration;

use hw_tests::VenuedBuilder;

#[tokio::test]
async fn plain_venued_runs_on_embedded_defaults_and_is_ready() {
    let cwd = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&cwd.path().join("venued-data"))
        .plain_in(cwd.path())
        .spawn()
        .await
        .unwrap();
    assert_eq!(venued.addr.port(), 8080, "the default port");
    let response = reqwest::get("http://127.0.0.1:8080/readyz").await.unwrap();
    assert_eq!(response.status(), 200);
    // The default data directory, relative to where it was started, holds the database and
    // a private admin token.
    let token = cwd.path().join("venued-data/admin-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(cwd.path().join("venued-data/venued.db").is_file());
    let exit = venued.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success());
}
