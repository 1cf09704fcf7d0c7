//! A real IPP Everywhere printer for tests: CUPS's `ippeveprinter` (Debian `cups-ipp-utils`),
//! which keeps every document it is sent in a spool directory.
//!
//! `ippeveprinter` will not start without DNS-SD, so this also runs a private system bus
//! (`dbus-daemon`) and an `avahi-daemon` on it that is allowed the loopback interface only:
//! nothing is announced on the machine's real interfaces. avahi-daemon keeps a fixed pid file,
//! so one [`Dnssd`] runs at a time; the tests that need it share one test function.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::system_bus::PrivateBus;

/// A private system bus with an avahi-daemon on loopback.
pub struct Dnssd {
    bus: PrivateBus,
    _avahi: Child,
    /// The bus address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

impl Dnssd {
    /// Starts the bus and avahi, and waits until avahi has registered on the bus.
    pub async fn start() -> anyhow::Result<Self> {
        let bus = PrivateBus::start().await?;
        let address = bus.address.clone();
        clear_stale_pid_file();
        let avahi_conf = bus.dir().join("avahi.conf");
        // Loopback only: mDNS never leaves this machine's `lo`.
        std::fs::write(
            &avahi_conf,
            "[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=lo\nenable-dbus=yes\n\
             [wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\npublish-workstation=no\n",
        )?;
        let mut avahi = Command::new("avahi-daemon")
            .arg("-f")
            .arg(&avahi_conf)
            .args(["--no-drop-root", "--no-chroot", "--no-rlimits"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start avahi-daemon (Debian package avahi-daemon)")?;
        let stderr = avahi.stderr.take().context("avahi stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        // "Server startup complete" is avahi's own readiness line.
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Server startup complete") {
                    return Ok::<_, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await
        .context("avahi-daemon did not start within 20 s")??;
        if !ready {
            bail!("avahi-daemon exited before it was ready (is another one running?)");
        }
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            bus,
            _avahi: avahi,
            address,
        })
    }

    /// A new spool directory under this fixture.
    pub fn spool(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bus.dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(path)
    }
}

/// avahi-daemon refuses to start while its pid file names a live process: one left by a test
/// that was killed (its avahi gone, or a zombie) is removed.
fn clear_stale_pid_file() {
    let file = Path::new("/run/avahi-daemon/pid");
    let Ok(pid) = std::fs::read_to_string(file) else {
        return;
    };
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // The state is the field after the command's closing parenthesis; `Z` is a zombie.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    if matches!(state, None | Some("Z")) {
        let _ = std::fs::remove_file(file);
    }
}

/// A running `ippeveprinter`.
pub struct IppPrinter {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it keeps the documents it received.
    pub spool: PathBuf,
}

impl IppPrinter {
    /// Starts a printer named `name` on `port`, accepting `formats` (e.g. `application/pdf`),
    /// spooling to `spool`; returns once it accepts connections. It simulates printing: each
    /// job takes it 5-15 s, and it answers `server-error-busy` meanwhile.
    pub async fn start(
        dnssd: &Dnssd,
        name: &str,
        port: u16,
        formats: &str,
        spool: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(dnssd, name, port, formats, spool, &[]).await
    }

    /// As [`Self::start`], with more `ippeveprinter` arguments; `["-c", "/bin/true"]` makes a
    /// printer that prints each job at once (for benchmarks of the appliance, not the printer).
    pub async fn start_with(
        dnssd: &Dnssd,
        name: &str,
        port: u16,
        formats: &str,
        spool: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let child = Command::new("ippeveprinter")
            .args(extra)
            .args(["-p", &port.to_string(), "-k", "-d"])
            .arg(spool)
            .args(["-f", formats, name])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &dnssd.address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start ippeveprinter (Debian package cups-ipp-utils)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        // ippeveprinter prints nothing when it is ready: its port taking a connection is the sign.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("ippeveprinter did not listen on {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            port,
            spool: spool.to_path_buf(),
        })
    }

    /// The printer's URI.
    pub fn uri(&self) -> String {
        format!("ipp://127.0.0.1:{}/ipp/print", self.port)
    }

    /// Stops it (as a printer switched off).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The documents in `spool` (ippeveprinter names them after the job).
pub fn spooled(spool: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(spool)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "pdf"));
    files.sort();
    files
}

/// The text of a PDF (`pdftotext` from Debian `poppler-utils`).
pub fn pdf_text(pdf: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new("pdftotext")
        .arg(pdf)
        .arg("-")
        .output()
        .context("cannot run pdftotext (Debian package poppler-utils)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The QR codes on a PDF's first page: rasterised by `pdftoppm`, read by `zbarimg`.
pub fn pdf_qr_codes(pdf: &Path) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let png = dir.path().join("page");
    let status = std::process::Command::new("pdftoppm")
        .args(["-r", "150", "-png", "-singlefile"])
        .arg(pdf)
        .arg(&png)
        .status()
        .context("cannot run pdftoppm (Debian package poppler-utils)")?;
    if !status.success() {
        bail!("pdftoppm failed on {}", pdf.display());
    }
    let out = std::process::Command::new("zbarimg")
        .args(["-q", "--raw"])
        .arg(png.with_extension("png"))
        .output()
        .context("cannot run zbarimg (Debian package zbar-tools)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}
