//! The appliance image (`image/build amd64`) booted under QEMU (TCG: KVM does not work here),
//! checked from outside through forwarded ports the way venue IT meets it: a provisioning file
//! written into the boot partition with mtools, no mounts.
//!
//! One disk goes through three boots: an invalid file (the box stays in its safe state and says
//! why, on the console and on the boot partition), the corrected file (READY, the provisioned
//! event, relay and admin token, the provisioned MQTT device and one the admin registers, no
//! SSH), and a new file with an SSH key
//! (re-provisioning; the data of the boot before is intact, `/var` has grown to the disk, and
//! `systemd-analyze security` inside the guest scores venued ≤ 2.0).
//!
//! The guest's network is QEMU's user mode with `restrict=on`: it reaches nothing outside the
//! VM, and only the forwarded loopback ports reach it.

#![allow(
    clippy::unwrap_used,
    reason = "a test should fail loudly on any unexpected error"
)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hw_tests::mqtt::{self, Options};
use sha2::Digest as _;

/// The first boot (first-boot setup, the data partition grown) took 40-50 s to a login prompt
/// here, later ones about 25 s to READY; a loaded CI machine gets room.
const BOOT: Duration = Duration::from_secs(300);
/// The disk the test grows the image to, as a larger SD card or SSD would be.
const DISK_BYTES: u64 = 4 << 30;

fn image() -> PathBuf {
    std::env::var_os("VENUE_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/amd64/venue-edge-amd64.img")
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The boot partition (FAT) starts 1 MiB into the disk; mtools reads and writes it in place.
fn fat(disk: &Path) -> String {
    format!("{}@@1M", disk.display())
}

fn fat_write(disk: &Path, name: &str, text: &str) {
    let file = disk.with_file_name(name);
    std::fs::write(&file, text).unwrap();
    run(Command::new("mcopy")
        .args(["-o", "-i", &fat(disk)])
        .arg(&file)
        .arg(format!("::{name}")));
}

fn fat_read(disk: &Path, name: &str) -> Option<String> {
    let out = Command::new("mtype")
        .args(["-i", &fat(disk), &format!("::{name}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

/// A copy of the built image as a new box's disk, grown to [`DISK_BYTES`].
fn fresh_disk(dir: &Path) -> PathBuf {
    let image = image();
    assert!(
        image.exists(),
        "{} is missing: run `image/build amd64` first",
        image.display()
    );
    let disk = dir.join("disk.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&disk));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .and_then(|f| f.set_len(DISK_BYTES))
        .unwrap();
    disk
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A self-signed certificate for the box (its name, and the loopback address its forwarded ports
/// are reached on here): the PEM certificate's path, and the `[appliance.tls]` table with it.
fn tls_certificate(dir: &Path) -> (PathBuf, String) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=hall-a.local"])
        .args(["-addext", "subjectAltName=DNS:hall-a.local,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let table = format!(
        "[appliance.tls]\ncertificate = \"\"\"\n{}\"\"\"\nprivate_key = \"\"\"\n{}\"\"\"\n",
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap()
    );
    (cert, table)
}

/// A new SSH key pair: the private key's path and the public key's line.
fn ssh_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A running guest.
struct Vm {
    child: std::process::Child,
    http: u16,
    mqtt: u16,
    mqtt_tls: u16,
    ssh: u16,
    monitor: PathBuf,
    serial: PathBuf,
}

impl Vm {
    fn boot(disk: &Path, name: &str) -> Vm {
        Self::boot_with(disk, name, None)
    }

    /// Boots with `stick` as a second, read-only disk: a USB stick carrying update bundles.
    fn boot_with(disk: &Path, name: &str, stick: Option<&Path>) -> Vm {
        let dir = disk.parent().unwrap();
        let vars = dir.join("OVMF_VARS.fd");
        if !vars.exists() {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
        }
        let (http, mqtt, mqtt_tls, ssh) = (free_port(), free_port(), free_port(), free_port());
        let monitor = dir.join(format!("{name}.monitor"));
        let serial = dir.join(format!("{name}.serial"));
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-machine", "q35", "-m", "1024", "-smp", "2", "-display", "none",
            ])
            .args([
                "-drive",
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            ])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-netdev")
            .arg(format!(
                "user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:{http}-:8080,\
                 hostfwd=tcp:127.0.0.1:{mqtt}-:1883,hostfwd=tcp:127.0.0.1:{mqtt_tls}-:8883,\
                 hostfwd=tcp:127.0.0.1:{ssh}-:22"
            ))
            .args(stick.map_or_else(Vec::new, |s| {
                vec![
                    "-drive".to_string(),
                    format!("file={},format=raw,if=virtio,readonly=on", s.display()),
                ]
            }))
            .args(["-device", "virtio-net-pci,netdev=n", "-device", "i6300esb"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 (Debian's qemu-system-x86)");
        Vm {
            child,
            http,
            mqtt,
            mqtt_tls,
            ssh,
            monitor,
            serial,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// `venued`'s `/api/v1/status`.
    async fn status(&self, client: &reqwest::Client) -> serde_json::Value {
        let response = client.get(self.url("/api/v1/status")).send().await;
        response.unwrap().json().await.unwrap()
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200: nothing else crosses the VM's boundary to wait on.
    async fn ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + BOOT;
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("qemu exited ({status}); console:\n{}", self.serial());
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {BOOT:?}; console:\n{}",
                self.serial()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Presses the power button (ACPI) and waits for the guest to shut down cleanly.
    async fn power_off(mut self) {
        use std::io::Write as _;
        let mut monitor = std::os::unix::net::UnixStream::connect(&self.monitor).unwrap();
        monitor.write_all(b"system_powerdown\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the guest did not power off; console:\n{}", self.serial());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the forwarded SSH port answers: the server's banner, or "" when the guest has no SSH
/// (QEMU accepts on the host side, then closes when the guest refuses).
fn ssh_banner(port: u16) -> String {
    use std::io::Read as _;
    let Ok(mut stream) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))) else {
        return String::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

fn ssh(key: &Path, port: u16, command: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "root@127.0.0.1", command])
        .output()
        .expect("ssh (openssh-client)")
}

const ADMIN_TOKEN: &str = "vat_image-test-0f4e1c7a9b2d";
/// The provisioned kiosk's password (27 characters, as `openssl rand -base64 20` gives).
const KIOSK_PASSWORD: &str = "Qm9vdGVkIHVuZGVyIFFFTVUgVEN";

fn provisioning(event: &str, extra_appliance: &str) -> String {
    let hash = hex::encode(sha2::Sha256::digest(ADMIN_TOKEN.as_bytes()));
    format!(
        "[appliance]\nhostname = \"hall-a\"\n{extra_appliance}\n\
         update_trial_secs = 60\n\
         [[appliance.devices]]\nid = \"kiosk-1\"\nkind = \"kiosk\"\n\
         password = \"{KIOSK_PASSWORD}\"\n\
         [event]\nid = \"{event}\"\n\
         [sync]\nrelay_url = \"http://relay.invalid:9000\"\ntoken = \"vrt_image-test\"\n\
         [http]\nadmin_token_sha256 = \"{hash}\"\n"
    )
}

#[tokio::test]
#[ignore = "boots the appliance image under QEMU: run by scripts/test after image/build amd64"]
async fn the_image_provisions_from_its_boot_partition_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let disk = fresh_disk(dir.path());
    let client = http_client();

    // 1. An invalid file on a new box: nothing starts, every problem is said.
    fat_write(
        &disk,
        "venue-edge.toml",
        "[appliance]\nhostname = \"Hall A\"\n[event]\nid = \"bad id!\"\n",
    );
    let vm = Vm::boot(&disk, "invalid");
    let deadline = Instant::now() + BOOT;
    while !vm.serial().contains("login:") {
        assert!(
            Instant::now() < deadline,
            "no login prompt; console:\n{}",
            vm.serial()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let console = vm.serial();
    assert!(
        console.contains("the provisioning file is invalid")
            && console.contains("`appliance.hostname`")
            && console.contains("`event.id`"),
        "the console does not show the problems:\n{console}"
    );
    assert!(
        client.get(vm.url("/readyz")).send().await.is_err(),
        "venued serves on an unprovisioned box with an invalid file"
    );
    vm.power_off().await;
    let error = fat_read(&disk, "venue-edge-ERROR.txt").expect("venue-edge-ERROR.txt written back");
    assert!(
        error.contains("NOT applied") && error.contains("`appliance.hostname`: `Hall A`"),
        "{error}"
    );
    assert!(
        fat_read(&disk, "venue-edge.toml").is_some(),
        "the invalid file is left to correct"
    );

    // 2. The corrected file: READY with what was provisioned, and no SSH without keys.
    fat_write(&disk, "venue-edge.toml", &provisioning("conf-2026", ""));
    let mut vm = Vm::boot(&disk, "provisioned");
    vm.ready(&client).await;
    let status = vm.status(&client).await;
    assert_eq!(status["event_id"], "conf-2026", "{status}");
    assert_eq!(
        status["sync"]["agent"]["relay"], "http://relay.invalid:9000",
        "{status}"
    );
    // What the image tells venued: the slot booted and its release, and no refused file.
    assert_eq!(status["system"]["slot"], "A", "{status}");
    assert!(
        status["system"]["image_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{status}"
    );
    assert!(status["system"]["provisioning_error"].is_null(), "{status}");
    let mqtt_addr = SocketAddr::from(([127, 0, 0, 1], vm.mqtt));
    let kiosk = mqtt::connect(mqtt_addr, Options::device("kiosk-1", KIOSK_PASSWORD))
        .await
        .expect("the provisioned kiosk logs in over MQTT");
    kiosk.client.disconnect().await.unwrap();
    assert!(
        mqtt::connect(mqtt_addr, Options::device("kiosk-1", "wrong"))
            .await
            .is_err(),
        "a wrong password is refused"
    );
    let refused = client
        .post(vm.url("/api/v1/admin/devices"))
        .bearer_auth("vat_wrong")
        .json(&serde_json::json!({"id": "kiosk-2", "kind": "kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let created = client
        .post(vm.url("/api/v1/admin/devices"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "kiosk-2", "kind": "kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        201,
        "the provisioned admin token is accepted"
    );
    let body: serde_json::Value = created.json().await.unwrap();
    let password = body["password"].as_str().unwrap().to_string();
    let kiosk = mqtt::connect(mqtt_addr, Options::device("kiosk-2", &password))
        .await
        .expect("a device the admin registered logs in over MQTT");
    kiosk.client.disconnect().await.unwrap();
    let banner = ssh_banner(vm.ssh);
    assert!(
        !banner.starts_with("SSH-"),
        "SSH answers without provisioned keys: {banner}"
    );
    vm.power_off().await;
    let applied = fat_read(&disk, "venue-edge-STATUS.txt").expect("venue-edge-STATUS.txt");
    assert!(
        applied.contains("event: conf-2026") && applied.contains("devices: kiosk-1 (kiosk)"),
        "{applied}"
    );
    assert!(
        !applied.contains(KIOSK_PASSWORD),
        "a password on the boot partition: {applied}"
    );
    assert!(
        !applied.contains("vrt_image-test"),
        "a secret on the boot partition: {applied}"
    );
    assert!(
        fat_read(&disk, "venue-edge.toml").is_none(),
        "the applied file (with secrets) stays"
    );
    assert!(
        fat_read(&disk, "venue-edge-ERROR.txt").is_none(),
        "the old error stays"
    );

    // 3. Re-provisioning with an SSH key: the data is intact, /var has the whole disk, and the
    // service's exposure inside the guest is what the unit promises.
    let (key, public) = ssh_key(dir.path());
    let (cert, tls) = tls_certificate(dir.path());
    fat_write(
        &disk,
        "venue-edge.toml",
        &format!(
            // MQTT over WebSocket off and a certificate given (MQTT over TLS on): the firewall
            // follows the configuration. And a Wi-Fi network (QEMU has no radio to join it).
            "{}[mqtt]\nlisten_ws = \"\"\n{tls}\
             [appliance.wifi]\nssid = \"Venue Staff\"\npassphrase = \"correct horse battery\"\n",
            provisioning(
                "conf-2026",
                &format!("ssh_authorized_keys = [\"{}\"]", public.trim()),
            )
        ),
    );
    let mut vm = Vm::boot(&disk, "ssh");
    vm.ready(&client).await;
    let mqtt_addr = SocketAddr::from(([127, 0, 0, 1], vm.mqtt));
    for (id, password) in [("kiosk-1", KIOSK_PASSWORD), ("kiosk-2", password.as_str())] {
        let kiosk = mqtt::connect(mqtt_addr, Options::device(id, password))
            .await
            .unwrap_or_else(|e| panic!("{id} does not log in after re-provisioning: {e}"));
        kiosk.client.disconnect().await.unwrap();
    }
    // MQTT over TLS with the provisioned certificate, verified against it.
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &vm.mqtt_tls.to_string(),
            "--cafile",
        ])
        .arg(&cert)
        .args(["-i", "kiosk-1", "-u", "kiosk-1", "-P", KIOSK_PASSWORD])
        .args(["-t", "venue/conf-2026/kiosk/kiosk-1/#", "-W", "2"])
        .output()
        .unwrap();
    // Nothing arrives on the kiosk's own topics in 2 s: mosquitto_sub's timeout (exit 27) after
    // a verified handshake and an accepted login; a refused certificate or login exits at once
    // with another code.
    assert_eq!(
        out.status.code(),
        Some(27),
        "MQTT over TLS with the provisioned certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let security = loop {
        let out = ssh(
            &key,
            vm.ssh,
            "systemd-analyze security venued.service --no-pager",
        );
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "ssh with the provisioned key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let score: f64 = security
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for venued.service: "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{security}"));
    assert!(
        score <= 2.0,
        "venued's exposure in the image is {score}:\n{security}"
    );
    let var = ssh(&key, vm.ssh, "findmnt -bno SIZE /var");
    let var_bytes: u64 = String::from_utf8_lossy(&var.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    // The image's data partition is 256 MiB; the 4 GiB disk leaves it 1.7 GiB.
    assert!(
        var_bytes > 3 << 29,
        "/var did not grow to the disk: {var_bytes} bytes"
    );
    // Every unit started: the firewall among them (it failed once without /etc/protocols).
    let failed = ssh(&key, vm.ssh, "systemctl --failed --no-legend --plain");
    assert_eq!(
        String::from_utf8_lossy(&failed.stdout).trim(),
        "",
        "failed units"
    );
    let firewall = ssh(&key, vm.ssh, "nft list table inet venue_edge");
    let rules = String::from_utf8_lossy(&firewall.stdout);
    assert!(
        rules.contains("policy drop"),
        "no firewall: {}",
        String::from_utf8_lossy(&firewall.stderr)
    );
    assert!(
        rules.contains("tcp dport 8080 accept comment \"venued http\"")
            && rules.contains("tcp dport 1883 accept comment \"venued mqtt\"")
            && rules.contains("tcp dport 8883 accept comment \"venued mqtt-tls\"")
            && !rules.contains("8083"),
        "the firewall does not follow the configuration:\n{rules}"
    );
    // Wi-Fi: the network is iwd's (its passphrase readable by root only), iwd runs, and
    // networkd has the unit for the wireless interface.
    let wifi = ssh(
        &key,
        vm.ssh,
        "stat -c '%a' '/var/lib/iwd/Venue Staff.psk' && systemctl is-active iwd && \
         cat /run/systemd/network/11-venue-edge-wifi.network",
    );
    let wifi = String::from_utf8_lossy(&wifi.stdout);
    assert!(
        wifi.starts_with("600\nactive\n") && wifi.contains("Type=wlan"),
        "the Wi-Fi network is not installed: {wifi}"
    );
    let hostname = ssh(&key, vm.ssh, "hostname");
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "hall-a");
    eprintln!("venued's exposure in the image: {score}; /var {var_bytes} bytes");
    vm.power_off().await;

    // 4. An invalid file on a provisioned box: it keeps serving as it was, and says why the
    // file was not applied in its status (and so on the console page).
    fat_write(
        &disk,
        "venue-edge.toml",
        &provisioning("conf-2026", "").replace("conf-2026", "Conf 2026"),
    );
    let mut vm = Vm::boot(&disk, "refused");
    vm.ready(&client).await;
    let status = vm.status(&client).await;
    assert_eq!(status["event_id"], "conf-2026", "{status}");
    let refused = status["system"]["provisioning_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        refused.contains("NOT applied") && refused.contains("`event.id`"),
        "{status}"
    );
    vm.power_off().await;
    assert!(
        fat_read(&disk, "venue-edge-ERROR.txt").is_some(),
        "the error is written back"
    );
}

#[tokio::test]
#[ignore = "boots the appliance image under QEMU five times (about 8 minutes): run by hand after image/build amd64"]
async fn an_update_is_tried_once_and_a_failed_one_rolls_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let disk = fresh_disk(dir.path());
    let client = http_client();
    let (key, public) = ssh_key(dir.path());
    fat_write(
        &disk,
        "venue-edge.toml",
        &provisioning(
            "conf-2026",
            &format!("ssh_authorized_keys = [\"{}\"]", public.trim()),
        ),
    );
    let stick = update_stick(dir.path());
    let mut vm = Vm::boot_with(&disk, "update", Some(&stick));
    vm.ready(&client).await;
    // Data written on v1: a device the admin registers.
    let created = client
        .post(vm.url("/api/v1/admin/devices"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "kiosk-2", "kind": "kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    let password = body["password"].as_str().unwrap().to_string();

    // 4. Updates from the stick: a bundle signed by another key is refused; v2 is installed
    // into slot B, tried once, serves with the data intact and is kept; v3, whose venued
    // migrates the database and never gets ready, is tried once and the box comes back on v2
    // by itself, with the database as v2 left it.
    // The guest keeps its forwarded ports across the reboots below (one QEMU process).
    let port = vm.ssh;
    let sh = |command: &str| sh2(&key, port, command);
    let (ok, out) = sh("mkdir -p /run/stick && mount -o ro /dev/vdb /run/stick");
    assert!(ok, "mounting the stick: {out}");
    let (ok, out) = sh("rauc install /run/stick/forged.raucb");
    assert!(
        !ok && out.contains("signature"),
        "a forged bundle was not refused: {out}"
    );
    let (ok, out) = sh("rauc install /run/stick/v2.raucb");
    assert!(ok, "installing v2: {out}");
    let mut vm = reboot_into(vm, &key, "B").await;
    vm.ready(&client).await;
    assert_eq!(release(&key, vm.ssh), "2");
    let status = vm.status(&client).await;
    assert_eq!(
        (
            &status["system"]["slot"],
            &status["system"]["image_version"]
        ),
        (&serde_json::json!("B"), &serde_json::json!("2")),
        "venued reports the slot and release it runs: {status}"
    );
    let kiosk = mqtt::connect(
        SocketAddr::from(([127, 0, 0, 1], vm.mqtt)),
        Options::device("kiosk-2", &password),
    )
    .await
    .expect("the admin's device still logs in on v2");
    kiosk.client.disconnect().await.unwrap();
    // The trial boot completed: systemd-bless-boot dropped the counter.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, entries) = sh("ls /boot/efi/loader/entries");
        if entries.lines().any(|l| l == "venue-2-b.conf") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2's entry was never marked good: {entries}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (ok, out) = sh(
        "mkdir -p /run/stick && mount -o ro /dev/vdb /run/stick; rauc install /run/stick/v3.raucb",
    );
    assert!(ok, "installing v3: {out}");
    // v3's venued never gets ready: after appliance.update_trial_secs the box reboots, and
    // systemd-boot, with no tries left for v3, boots v2 again.
    let mut vm = reboot_into(vm, &key, "A").await;
    let n = boots(&vm).len() + 1;
    wait_for_boot(&mut vm, n, "B", Duration::from_secs(420)).await;
    vm.ready(&client).await;
    assert_eq!(release(&key, vm.ssh), "2");
    let (_, entries) = sh("ls /boot/efi/loader/entries");
    assert!(
        entries.contains("venue-3-a+0-1.conf"),
        "v3 is not marked bad: {entries}"
    );
    let (kept, failed) = sh2(
        &key,
        vm.ssh,
        "ls -d /var/lib/venue-edge/failed-update-*/venued.db",
    );
    assert!(kept, "the failed update's database was not kept: {failed}");
    // v3's venued had moved the schema on (user_version 999); the restored one is v2's.
    let version = |path: &str| sh(&format!("od -An -j60 -N4 -tx1 {path}")).1;
    assert_eq!(
        version("/var/lib/venue-edge/failed-update-*/venued.db").trim(),
        "00 00 03 e7"
    );
    assert_ne!(version("/var/lib/venued/venued.db").trim(), "00 00 03 e7");
    for (id, password) in [("kiosk-1", KIOSK_PASSWORD), ("kiosk-2", password.as_str())] {
        let kiosk = mqtt::connect(
            SocketAddr::from(([127, 0, 0, 1], vm.mqtt)),
            Options::device(id, password),
        )
        .await
        .unwrap_or_else(|e| panic!("{id} does not log in after the rollback: {e}"));
        kiosk.client.disconnect().await.unwrap();
    }
    vm.power_off().await;
}

fn sh2(key: &Path, port: u16, command: &str) -> (bool, String) {
    let out = ssh(key, port, command);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The image version the running slot carries.
fn release(key: &Path, port: u16) -> String {
    let (_, out) = sh2(key, port, "cat /usr/lib/venue-edge/release");
    out.trim()
        .strip_prefix("VENUE_EDGE_IMAGE_VERSION=")
        .unwrap_or(&out)
        .to_string()
}

/// The kernel command lines the guest has booted with so far, from its serial console (one
/// QEMU process keeps appending across the guest's reboots).
fn boots(vm: &Vm) -> Vec<String> {
    vm.serial()
        .lines()
        .filter_map(|l| l.split_once("] Command line: ").map(|(_, c)| c.to_string()))
        .collect()
}

/// Waits for the guest's boot number `n` (counting from 1) to reach its login prompt, and
/// asserts it runs slot `slot`. The serial console is the one witness that crosses reboots:
/// polling SSH through QEMU's forwarding while the guest is down leaves half-open connections
/// that later fill sshd's start-up queue.
async fn wait_for_boot(vm: &mut Vm, n: usize, slot: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let console = vm.serial();
        let booted = boots(vm);
        if let Some(cmdline) = booted.get(n - 1) {
            assert!(
                cmdline.contains(&format!("rauc.slot={slot}")),
                "boot {n} is not slot {slot}: {cmdline}"
            );
            let after = console
                .rsplit_once(cmdline.as_str())
                .map_or("", |(_, rest)| rest);
            if after.contains("login:") {
                return;
            }
        }
        if let Ok(Some(status)) = vm.child.try_wait() {
            panic!("qemu exited ({status}); console:\n{console}");
        }
        assert!(
            Instant::now() < deadline,
            "boot {n} (slot {slot}) not at its login prompt within {within:?}; console:\n{console}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reboots the guest and waits for the next boot to reach its login prompt on slot `slot`.
async fn reboot_into(mut vm: Vm, key: &Path, slot: &str) -> Vm {
    let n = boots(&vm).len() + 1;
    let _ = ssh(key, vm.ssh, "systemctl reboot");
    wait_for_boot(&mut vm, n, slot, BOOT).await;
    vm
}

/// A FAT disk like a USB stick, with the update bundles made from the image's own root file
/// system: v2 (only its version differs), v3 (its venued moves the database's schema on and
/// never gets ready) and a forged v2, signed by a key the box does not trust. Compressed with
/// lz4 (about a second each here; zstd, the default, takes half a minute).
fn update_stick(dir: &Path) -> PathBuf {
    let rootfs = image().with_file_name("rootfs.ext4");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let debugfs = |fs: &Path, command: &str| {
        run(Command::new("debugfs").args(["-w", "-R", command]).arg(fs));
    };
    let variant = |version: &str, broken_venued: bool| -> PathBuf {
        let fs = dir.join(format!("v{version}.ext4"));
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&rootfs)
            .arg(&fs));
        let release = dir.join(format!("release-{version}"));
        std::fs::write(&release, format!("VENUE_EDGE_IMAGE_VERSION={version}\n")).unwrap();
        debugfs(&fs, "rm /usr/lib/venue-edge/release");
        debugfs(
            &fs,
            &format!("write {} /usr/lib/venue-edge/release", release.display()),
        );
        if broken_venued {
            let script = dir.join("venued-v3");
            std::fs::write(
                &script,
                "#!/bin/sh\n# v3's venued: migrates the schema (user_version 999), never ready.\n\
                 printf '\\000\\000\\003\\347' | dd of=/var/lib/venued/venued.db bs=1 seek=60 \
                 conv=notrunc 2>/dev/null\nexec sleep infinity\n",
            )
            .unwrap();
            debugfs(&fs, "rm /usr/bin/venued");
            debugfs(&fs, &format!("write {} /usr/bin/venued", script.display()));
            debugfs(&fs, "set_inode_field /usr/bin/venued mode 0100755");
        }
        let bundle = dir.join(format!("v{version}.raucb"));
        run(Command::new(workspace.join("image/bundle"))
            .env("VENUE_BUNDLE_COMPRESSION", "lz4")
            .arg(&fs)
            .arg(version)
            .arg(&bundle));
        std::fs::remove_file(&fs).unwrap();
        bundle
    };
    let v2 = variant("2", false);
    let v3 = variant("3", true);
    let untrusted_key = dir.join("untrusted.key.pem");
    let untrusted_cert = dir.join("untrusted.cert.pem");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=not the venue-edge update key",
            "-keyout",
        ])
        .arg(&untrusted_key)
        .arg("-out")
        .arg(&untrusted_cert));
    let forged = dir.join("forged.raucb");
    run(Command::new("rauc")
        .arg("resign")
        .arg(format!(
            "--keyring={}",
            workspace
                .join("target/image/keys/development.cert.pem")
                .display()
        ))
        .arg(format!("--signing-keyring={}", untrusted_cert.display()))
        .arg(format!("--cert={}", untrusted_cert.display()))
        .arg(format!("--key={}", untrusted_key.display()))
        .arg(&v2)
        .arg(&forged));
    let stick = dir.join("stick.img");
    let size_kib = [&v2, &v3, &forged]
        .iter()
        .map(|b| std::fs::metadata(b).unwrap().len() / 1024)
        .sum::<u64>()
        + 64 * 1024;
    run(Command::new("mkfs.vfat")
        .args(["-C", "-F", "32", "-n", "UPDATES"])
        .arg(&stick)
        .arg(size_kib.to_string()));
    for bundle in [&v2, &v3, &forged] {
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&stick)
            .arg(bundle)
            .arg("::/"));
        std::fs::remove_file(bundle).unwrap();
    }
    stick
}

/// What the box writes to its disk: an SD card dies of writes, so BENCHMARKS.md ("Disk wear")
/// records the bytes a check-in costs and those of an idle hour, from the guest kernel's own
/// count of sectors written to the whole disk (`/sys/block/vda/stat`: SQLite, the ext4
/// journal, journald, the boot partition). A measurement, not a test: it asserts only that it
/// ran. `VENUE_WEAR_CHECKINS` (default 1,000) and `VENUE_WEAR_IDLE_SECS` (default 900; the
/// hourly figure is scaled from it) set its length.
#[tokio::test]
#[ignore = "measures the image's disk writes under QEMU (about 20 minutes): run by hand, BENCHMARKS.md"]
async fn wear_bench() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (checkins, idle_secs) = (
        env("VENUE_WEAR_CHECKINS", 1000),
        env("VENUE_WEAR_IDLE_SECS", 900),
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = fresh_disk(dir.path());
    let client = http_client();
    let (key, public) = ssh_key(dir.path());
    fat_write(
        &disk,
        "venue-edge.toml",
        &provisioning(
            "conf-2026",
            &format!("ssh_authorized_keys = [\"{}\"]", public.trim()),
        ),
    );
    let mut vm = Vm::boot(&disk, "wear");
    vm.ready(&client).await;
    let mut csv = String::from("id,name,ticket_code\n");
    for i in 0..checkins {
        csv.push_str(&format!("a{i},Attendee {i},T{i}\n"));
    }
    let imported = client
        .post(vm.url("/api/v1/admin/attendees/import"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert!(imported.status().is_success(), "{}", imported.status());
    // First boot's own writes (growing /var, keys, the journal's first flush) settle first.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let written = || {
        let (ok, out) = sh2(&key, vm.ssh, "sync && cat /sys/block/vda/stat");
        assert!(ok, "{out}");
        // Field 7: sectors written, of 512 bytes whatever the device's sector size.
        out.split_whitespace()
            .nth(6)
            .and_then(|s| s.parse::<u64>().ok())
            .map(|sectors| sectors * 512)
            .unwrap_or_else(|| panic!("no write count in {out}"))
    };
    // Who writes, for the breakdown: each partition's bytes, and each process's (by name; from
    // /proc/<pid>/io, what it sent to the storage layer, so a process that exits is missed).
    let writers = || {
        let (ok, out) = sh2(
            &key,
            vm.ssh,
            "sync; for p in /sys/block/vda/vda*/stat; do \
             echo \"partition:$(basename $(dirname $p)) $(awk '{print $7*512}' $p)\"; done; \
             for d in /proc/[0-9]*; do c=$(cat $d/comm 2>/dev/null) && \
             w=$(awk '/^write_bytes/{print $2}' $d/io 2>/dev/null) && echo \"$c $w\"; done",
        );
        assert!(ok, "{out}");
        let mut by_name = std::collections::BTreeMap::<String, u64>::new();
        for line in out.lines() {
            if let Some((name, bytes)) = line.rsplit_once(' ') {
                *by_name.entry(name.to_string()).or_default() += bytes.parse::<u64>().unwrap_or(0);
            }
        }
        by_name
    };
    let top = |before: &std::collections::BTreeMap<String, u64>,
               after: &std::collections::BTreeMap<String, u64>| {
        let mut deltas: Vec<(u64, &String)> = after
            .iter()
            .map(|(name, &b)| {
                (
                    b.saturating_sub(before.get(name).copied().unwrap_or(0)),
                    name,
                )
            })
            .filter(|(d, _)| *d > 0)
            .collect();
        deltas.sort_by(|a, b| b.cmp(a));
        deltas
            .iter()
            .take(12)
            .map(|(d, name)| format!("{name} {:.1} KiB", *d as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let writers_before = writers();
    let before = written();
    let started = Instant::now();
    for i in 0..checkins {
        let r = client
            .post(vm.url("/api/v1/checkins"))
            .basic_auth("kiosk-1", Some(KIOSK_PASSWORD))
            .header("idempotency-key", format!("wear-{i}"))
            .json(&serde_json::json!({"ticket_code": format!("T{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "check-in {i}");
    }
    let took = started.elapsed();
    let after_checkins = written();
    let writers_checkins = writers();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let after_idle = written();
    let writers_idle = writers();
    eprintln!(
        "wear: the check-ins' writers: {}",
        top(&writers_before, &writers_checkins)
    );
    eprintln!(
        "wear: the idle time's writers: {}",
        top(&writers_checkins, &writers_idle)
    );
    let per_checkin = (after_checkins - before) as f64 / checkins as f64;
    let per_hour = (after_idle - after_checkins) as f64 * 3600.0 / idle_secs as f64;
    eprintln!(
        "wear: {checkins} check-ins in {:.1} s wrote {} bytes: {:.0} bytes ({:.1} KiB) per check-in; \
         idle {idle_secs} s wrote {} bytes: {:.0} KiB per idle hour",
        took.as_secs_f64(),
        after_checkins - before,
        per_checkin,
        per_checkin / 1024.0,
        after_idle - after_checkins,
        per_hour / 1024.0
    );
    assert!(
        after_checkins > before,
        "the check-ins wrote nothing to the disk"
    );
    vm.power_off().await;
}
