//! A private D-Bus system bus for tests (`dbus-daemon` with a system-bus configuration that
//! allows everything): what the virtual BlueZ and the DNS-SD daemon of the printing tests talk
//! on, so nothing reaches the machine's own bus. Stops when dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running private bus.
pub struct PrivateBus {
    dir: tempfile::TempDir,
    _daemon: Child,
    /// Its address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

impl PrivateBus {
    /// Starts `dbus-daemon` (Debian `dbus-daemon`) and waits until it listens.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("bus.conf");
        // The policy dbusmock's own PrivateDBus writes: everything allowed on a private bus.
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={}</listen>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        )?;
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start dbus-daemon (Debian package dbus-daemon)")?;
        let stdout = daemon.stdout.take().context("dbus-daemon stdout")?;
        // The daemon prints its address once it listens: that line is the readiness event.
        let address = tokio::time::timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .context("dbus-daemon printed no address within 20 s")??
        .context("dbus-daemon exited before listening")?
        .trim()
        .to_string();
        Ok(Self {
            dir,
            _daemon: daemon,
            address,
        })
    }

    /// A directory that lives as long as the bus, for the other daemons' files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
