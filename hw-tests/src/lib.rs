//! The harness for tests that run the real binaries as separate processes.
//!
//! [`VenuedBuilder`] starts a real `venued` on a private data directory and loopback port 0, with
//! `NOTIFY_SOCKET` pointing at a datagram socket the harness owns. The harness learns readiness
//! and the bound address from the daemon's own `READY=1`/`STATUS=` notifications, so tests wait
//! on events, never on sleeps, and exercise the systemd protocol on every run.
//!
//! The binaries are found next to the test executable's target directory (build them first:
//! `cargo build --workspace --bins`), or at `$VENUED_BIN`.

pub mod bluez;
pub mod disk;
pub mod mqtt;
pub mod printer;
pub mod relay;
pub mod s3;
pub mod system_bus;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

/// How long a daemon may take to become ready (a debug build on a loaded 2-core CI machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of a workspace binary built by cargo (`venued`, `venue-relay`, ...).
pub fn binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&var) {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found; run `cargo build --workspace --bins` first or set ${var}",
        path.display()
    );
    path
}

/// Options for starting a `venued`.
pub struct VenuedBuilder {
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    listen_on_loopback: bool,
    netns: Option<String>,
}

impl VenuedBuilder {
    /// A daemon on `data_dir`, listening on 127.0.0.1 with a kernel-chosen port.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            listen_on_loopback: true,
            netns: None,
        }
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the daemon inside the network namespace `name` (`ip netns exec`), which the test
    /// made. Its HTTP API is then not reachable from the test's own namespace.
    pub fn in_netns(mut self, name: &str) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Runs with no `--data-dir` and no listen override, in `cwd`: the README's plain `venued`.
    pub fn plain_in(mut self, cwd: &Path) -> Self {
        self.cwd = Some(cwd.to_path_buf());
        self.listen_on_loopback = false;
        self
    }

    /// Starts the daemon and waits for `READY=1`.
    pub async fn spawn(self) -> anyhow::Result<Venued> {
        let notify_dir = tempfile::tempdir()?;
        let socket_path = notify_dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path)?;
        let log_path = self.data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` enters the namespace and then execs venued: the same process.
                c.args(["netns", "exec", ns]).arg(binary("venued"));
                c
            }
            None => Command::new(binary("venued")),
        };
        if self.cwd.is_none() {
            command.arg("--data-dir").arg(&self.data_dir);
        }
        if self.listen_on_loopback {
            command.env("VENUED_HTTP_LISTEN", "127.0.0.1:0");
            // MQTT on ports the OS picks, so tests run side by side; `mqtt_addrs` finds them.
            command.env("VENUED_MQTT_LISTEN", "127.0.0.1:0");
            command.env("VENUED_MQTT_LISTEN_WS", "127.0.0.1:0");
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command
            .args(&self.args)
            // Nothing multicast on the machine's real interfaces: a test that checks the LAN
            // advertisement turns it back on inside a network namespace of its own.
            .env("VENUED_MDNS_ENABLED", "false")
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            // How the tests find the binary, not a setting: venued refuses unknown VENUED_ keys.
            .env_remove("VENUED_BIN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone()?)
            .kill_on_drop(true);
        let child = command.spawn().context("cannot start venued")?;
        let mut venued = Venued {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: self.data_dir,
            log_path,
            socket,
            _notify_dir: notify_dir,
            notifications: Vec::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // Short waits, so a daemon that exits before it is ready is noticed at once rather
            // than after the whole timeout (a caller retrying like systemd depends on it).
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = remaining.min(Duration::from_millis(250));
            let Some(message) = venued.next_notification(wait).await? else {
                if let Some(status) = venued.child.try_wait()? {
                    bail!(
                        "venued exited ({status}) before READY=1; log:\n{}",
                        venued.log()
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "venued sent no READY=1 within {READY_TIMEOUT:?}; log:\n{}",
                        venued.log()
                    );
                }
                continue;
            };
            if let Some(addr) = message
                .lines()
                .find_map(|l| l.strip_prefix("STATUS=serving on http://"))
            {
                venued.addr = addr.parse().context("STATUS address")?;
            }
            if message.lines().any(|l| l == "READY=1") {
                return Ok(venued);
            }
        }
    }
}

/// A running `venued` process.
pub struct Venued {
    child: Child,
    /// The HTTP address it serves on.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    log_path: PathBuf,
    socket: UnixDatagram,
    _notify_dir: tempfile::TempDir,
    /// Every notification received so far, in order.
    pub notifications: Vec<String>,
}

impl Venued {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin token the daemon wrote on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The daemon's `/metrics` as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(self.url("/metrics")).await?.text().await?)
    }

    /// A metric's value from `/metrics`, summed over its label sets (`name` is the whole series
    /// name, e.g. `venued_mqtt_dropped_total`; 0 when absent).
    pub async fn metric_sum(&self, name: &str) -> anyhow::Result<f64> {
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }

    /// Where MQTT listens, from `/api/v1/status`: `tcp`, `v5`, `ws`, `tls` (absent when off).
    pub async fn mqtt_addr(&self, listener: &str) -> anyhow::Result<SocketAddr> {
        let status: serde_json::Value = reqwest::get(self.url("/api/v1/status"))
            .await?
            .json()
            .await?;
        status["mqtt"][listener]
            .as_str()
            .with_context(|| format!("no MQTT `{listener}` listener in {status}"))?
            .parse()
            .context("MQTT address")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The next sd_notify datagram, waiting up to `timeout`.
    pub async fn next_notification(&mut self, timeout: Duration) -> anyhow::Result<Option<String>> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(timeout, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notifications.push(message.clone());
                Ok(Some(message))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Ok(None),
        }
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("venued has exited")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// `kill -9` and reap.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub async fn terminate(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.wait(timeout).await
    }

    /// Waits up to `timeout` for the process to exit (kills it if it does not).
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "venued did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// An HTTP client with the admin token, for setting up fixtures.
pub struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    /// A client for `venued`'s admin API.
    pub fn new(venued: &Venued) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: venued.url(""),
            token: venued.admin_token(),
        }
    }

    /// Imports attendees `a0..a{n}` as CSV (ids `a{i}`, ticket codes `T{i}`).
    pub async fn import_attendees(&self, n: usize) -> anyhow::Result<()> {
        let mut csv = String::from("id,name,ticket_code\n");
        for i in 0..n {
            csv.push_str(&format!("a{i},Attendee {i},T{i}\n"));
        }
        self.import_csv(csv).await
    }

    /// Makes `id` an attendee (named after its id) unless it is one already: attendee tokens
    /// open nothing for anyone else.
    pub async fn ensure_attendee(&self, id: &str) -> anyhow::Result<()> {
        let (status, _) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/admin/attendees/{id}"),
                None,
            )
            .await?;
        if status == 200 {
            return Ok(());
        }
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/admin/attendees",
                Some(serde_json::json!({"id": id, "name": id})),
            )
            .await?;
        if !(200..300).contains(&status) {
            bail!("cannot add attendee {id}: {status} {body}");
        }
        Ok(())
    }

    /// Imports attendees from CSV text (header row first).
    pub async fn import_csv(&self, csv: String) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/api/v1/admin/attendees/import", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("import failed: {status} {}", response.text().await?);
        }
        Ok(())
    }

    /// Registers a kiosk; returns its HTTP Basic `Authorization` header value.
    pub async fn kiosk(&self, id: &str) -> anyhow::Result<String> {
        let password = self.device(id, "kiosk").await?;
        Ok(basic(id, &password))
    }

    /// Registers a device of `kind` (`kiosk`, `signage`, `gateway`); its password.
    pub async fn device(&self, id: &str, kind: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/api/v1/admin/devices", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"id": id, "kind": kind}))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("device creation failed: {status} {body}");
        }
        Ok(body["password"].as_str().unwrap_or_default().to_string())
    }

    /// Sends `method` to `path` under the API with the admin token and a JSON body; the status
    /// and the JSON answer (null when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// GETs `url` (with the bearer token, if given) until `ready` holds for its JSON body, for at
/// most `within`; the last body. For views that have no event stream to await yet (occupancy,
/// beacon health, readiness of a subsystem), a bounded poll is the honest wait.
pub async fn wait_for_json(
    url: &str,
    bearer: Option<&str>,
    what: &str,
    within: Duration,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let mut request = client.get(url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let value: serde_json::Value = request.send().await?.json().await?;
        if ready(&value) {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what} did not happen within {within:?}; last answer: {value}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP Basic `Authorization` header value.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The key id of the appliance's own token-signing key (`token-signing-key.pk8` in its data
/// directory): the kid of the `token_key.publish` op this appliance logged at first start.
pub fn appliance_kid(data_dir: &Path) -> anyhow::Result<String> {
    Ok(open_db(data_dir)?.query_row(
        "SELECT entity_id FROM ops WHERE kind = 'token_key.publish'
           AND origin = (SELECT value FROM meta WHERE key = 'node_id')
         ORDER BY seq DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?)
}

/// Opens the daemon's database read-only (the real SQLite file, as the daemon left it).
pub fn open_db(data_dir: &Path) -> anyhow::Result<rusqlite::Connection> {
    Ok(rusqlite::Connection::open_with_flags(
        data_dir.join("venued.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}
