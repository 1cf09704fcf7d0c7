//! A virtual BlueZ for tests: a private `dbus-daemon` with a system-bus configuration, and
//! python-dbusmock's `bluez5` template owning `org.bluez` on it. A `venued` started with
//! `DBUS_SYSTEM_BUS_ADDRESS` set to [`VirtualBluez::address`] scans it through btleplug exactly
//! as it would scan the real bluetoothd; the test adds adapters and devices and emits adverts.
//!
//! Needs Debian's `dbus-daemon` and `python3-dbusmock` (the test command installs them).

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::system_bus::PrivateBus;

/// The Debian interpreter that has python3-dbus and python3-dbusmock.
const PYTHON: &str = "/usr/bin/python3";

/// A running private bus with a mock `org.bluez`. Both processes stop when this is dropped.
pub struct VirtualBluez {
    _bus: PrivateBus,
    mock: Option<Child>,
    /// The bus address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

impl VirtualBluez {
    /// Starts the bus and the mock.
    pub async fn start() -> anyhow::Result<Self> {
        let bus = PrivateBus::start().await?;
        let address = bus.address.clone();
        let mut this = Self {
            _bus: bus,
            mock: None,
            address,
        };
        this.start_bluetoothd()?;
        Ok(this)
    }

    /// Starts the mock `org.bluez` (again, after [`Self::stop_bluetoothd`]: a bluetoothd
    /// restart; adapters and devices must be added anew, as after a real restart).
    pub fn start_bluetoothd(&mut self) -> anyhow::Result<()> {
        let mock = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start python3 -m dbusmock (Debian package python3-dbusmock)")?;
        self.mock = Some(mock);
        Ok(())
    }

    /// Runs the control script (`add-adapter`, `add-device`, `advert`); its output.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bluez_ctl.py");
        let out = Command::new(PYTHON)
            .arg(script)
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "bluez_ctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Stops the mock `org.bluez`, as when bluetoothd exits.
    pub async fn stop_bluetoothd(&mut self) -> anyhow::Result<()> {
        if let Some(mut mock) = self.mock.take() {
            mock.kill().await?;
        }
        Ok(())
    }
}
