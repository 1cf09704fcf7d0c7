//! Badge printing against real printers: CUPS's `ippeveprinter` (IPP Everywhere) and a raw ZPL
//! sink on TCP that the test runs. A kiosk check-in prints exactly one badge; the badge carries
//! the name as text and the ticket code as a QR code; a printer that is off, a daemon killed
//! with jobs queued and a printer that refuses the document are each handled without losing or
//! doubling a badge.

use std::path::Path;
use std::time::Duration;

use hw_tests::mqtt::{self, Options};
use hw_tests::printer::{Dnssd, IppPrinter, pdf_qr_codes, pdf_text, spooled};
use hw_tests::relay::free_port;
use hw_tests::{Admin, Venued, VenuedBuilder, wait_for_json};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// Fast checks and retries, so faults resolve in seconds.
fn builder(data: &Path) -> VenuedBuilder {
    VenuedBuilder::new(data)
        .env("VENUED_PRINT_PROBE_INTERVAL_SECS", "1")
        .env("VENUED_PRINT_RETRY_MAX_SECS", "1")
        .env("VENUED_PRINT_TRACK_INTERVAL_MS", "100")
        .env("VENUED_EVENT_NAME", "Venue Edge Conf")
}

async fn check_in(venued: &Venued, auth: &str, key: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(venued.url("/api/v1/checkins"))
        .header("authorization", auth)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits until job `id` is in `state`; the job.
async fn job_in(venued: &Venued, id: i64, state: &str) -> Value {
    wait_for_json(
        &venued.url(&format!("/api/v1/print/jobs/{id}")),
        Some(&venued.admin_token()),
        &format!("print job {id} reaching `{state}`"),
        Duration::from_secs(60),
        |job| job["state"] == state,
    )
    .await
    .unwrap()
}

async fn add_printer(admin: &Admin, id: &str, kind: &str, uri: &str, kiosks: &[&str]) {
    let (status, body) = admin
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/printers",
            Some(json!({"id": id, "kind": kind, "uri": uri, "kiosks": kiosks})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
}

/// Kiosk `id` on MQTT, subscribed to `topic` and known to be: the retained status of
/// `printer`, subscribed to after it, has arrived. The client, and that status and its retain
/// flag.
async fn kiosk_listening(
    venued: &Venued,
    id: &str,
    password: &str,
    topic: &str,
    printer: &str,
) -> (mqtt::Client, Value, bool) {
    let mut kiosk = mqtt::connect(
        venued.mqtt_addr("tcp").await.unwrap(),
        Options::device(id, password),
    )
    .await
    .unwrap();
    let status = format!("venue/default/printer/{printer}/status");
    for filter in [topic, &status] {
        kiosk
            .client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let (value, retained) = kiosk
        .message_on(&status, Duration::from_secs(30))
        .await
        .unwrap();
    (kiosk, value, retained)
}

/// The spooled PDFs that carry `name`.
fn badges_of(spools: &[&Path], name: &str) -> usize {
    spools
        .iter()
        .flat_map(|s| spooled(s))
        .filter(|pdf| pdf_text(pdf).unwrap_or_default().contains(name))
        .count()
}

/// One test function for every IPP scenario: avahi-daemon (which `ippeveprinter` needs) runs
/// one instance per machine.
#[tokio::test]
async fn ipp_badges_print_once_each_through_printer_outages_crashes_and_refusals() {
    let dnssd = Dnssd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut venued = builder(&data).spawn().await.unwrap();
    let admin = Admin::new(&venued);
    admin
        .import_csv(
            "id,name,company,role,ticket_code\n\
             a1,Zoë Ångström,Δέλτα,Speaker,TCK-0001\n\
             a2,Grace Hopper,US Navy,Attendee,TCK-0002\n\
             a3,Ada Lovelace,Analytical Engines Ltd,Attendee,TCK-0003\n\
             a4,Иван Петров,,Attendee,TCK-0004\n\
             a5,Alan Turing,,Attendee,TCK-0005\n"
                .into(),
        )
        .await
        .unwrap();
    let k1 = admin.kiosk("k1").await.unwrap();
    let port = free_port().unwrap();
    let spool_1 = dnssd.spool("spool-1").unwrap();
    let printer = IppPrinter::start(&dnssd, "Desk1", port, "application/pdf", &spool_1)
        .await
        .unwrap();
    add_printer(&admin, "desk-1", "ipp", &printer.uri(), &["k1"]).await;

    // A check-in prints exactly one badge: the name as text, the ticket code as a QR code.
    let (status, answer) = check_in(&venued, &k1, "c-1", json!({"ticket_code": "TCK-0001"})).await;
    assert_eq!(status, 201, "{answer}");
    let job = answer["badge"]["job_id"].as_i64().unwrap();
    assert_eq!(answer["badge"]["printer_id"], "desk-1");
    let done = job_in(&venued, job, "done").await;
    assert!(done["printer_job_id"].as_i64().is_some(), "{done}");
    let pdfs = spooled(&spool_1);
    assert_eq!(pdfs.len(), 1, "{pdfs:?}");
    let text = pdf_text(&pdfs[0]).unwrap();
    for shown in ["Zoë Ångström", "Δέλτα", "Speaker", "Venue Edge Conf"] {
        assert!(text.contains(shown), "`{shown}` not on the badge: {text}");
    }
    assert_eq!(
        pdf_qr_codes(&pdfs[0]).unwrap(),
        vec!["TCK-0001".to_string()]
    );
    // The golden badge: docs/badges/default.png is this badge as pdftoppm draws it at 100 dpi.
    compare_with_golden(&pdfs[0]);

    // A second check-in of the same person does not print again; asked for, it does.
    let (status, again) = check_in(&venued, &k1, "c-2", json!({"attendee_id": "a1"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["badge"],
        json!({"state": "available", "printer_id": "desk-1"})
    );
    let (_, asked) = check_in(
        &venued,
        &k1,
        "c-3",
        json!({"attendee_id": "a1", "badge": "print"}),
    )
    .await;
    job_in(&venued, asked["badge"]["job_id"].as_i64().unwrap(), "done").await;
    assert_eq!(badges_of(&[&spool_1], "Zoë Ångström"), 2);
    assert_eq!(badges_of(&[&spool_1], "Ada Lovelace"), 0);
    // Skipped on request.
    let (_, skipped) = check_in(
        &venued,
        &k1,
        "c-4",
        json!({"attendee_id": "a5", "badge": "skip"}),
    )
    .await;
    assert_eq!(skipped["badge"]["state"], "available", "{skipped}");

    // The printer is off when the job is created: the job waits, and prints when it returns.
    printer.stop().await.unwrap();
    let (_, answer) = check_in(&venued, &k1, "c-5", json!({"attendee_id": "a2"})).await;
    let job = answer["badge"]["job_id"].as_i64().unwrap();
    let waiting = wait_for_json(
        &venued.url(&format!("/api/v1/print/jobs/{job}")),
        Some(&venued.admin_token()),
        "the job waiting for its printer",
        Duration::from_secs(30),
        |j| {
            j["state"] == "queued"
                && j["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("unreachable"))
        },
    )
    .await
    .unwrap();
    assert!(waiting["attempts"].as_i64().unwrap() >= 1, "{waiting}");
    let status = wait_for_json(
        &venued.url("/api/v1/status"),
        None,
        "the printer seen offline",
        Duration::from_secs(30),
        |s| s["print"]["printers"]["desk-1"]["state"] == "offline",
    )
    .await
    .unwrap();
    assert_eq!(
        status["print"]["printers"]["desk-1"]["needs_attention"],
        true
    );
    assert!(
        venued
            .metrics()
            .await
            .unwrap()
            .contains("venued_printer_up{printer=\"desk-1\"} 0")
    );
    let spool_2 = dnssd.spool("spool-2").unwrap();
    let printer = IppPrinter::start(&dnssd, "Desk1", port, "application/pdf", &spool_2)
        .await
        .unwrap();
    job_in(&venued, job, "done").await;
    assert_eq!(badges_of(&[&spool_1, &spool_2], "Grace Hopper"), 1);

    // venued killed (-9) with jobs queued: after the restart each prints exactly once.
    printer.stop().await.unwrap();
    let (_, three) = check_in(&venued, &k1, "c-6", json!({"attendee_id": "a3"})).await;
    let (_, four) = check_in(&venued, &k1, "c-7", json!({"attendee_id": "a4"})).await;
    let jobs = [
        three["badge"]["job_id"].as_i64().unwrap(),
        four["badge"]["job_id"].as_i64().unwrap(),
    ];
    venued.kill9().await.unwrap();
    let spool_3 = dnssd.spool("spool-3").unwrap();
    let _printer = IppPrinter::start(&dnssd, "Desk1", port, "application/pdf", &spool_3)
        .await
        .unwrap();
    venued = builder(&data).spawn().await.unwrap();
    for job in jobs {
        job_in(&venued, job, "done").await;
    }
    let spools = [spool_1.as_path(), spool_2.as_path(), spool_3.as_path()];
    assert_eq!(badges_of(&spools, "Ada Lovelace"), 1);
    assert_eq!(badges_of(&spools, "Иван Петров"), 1);
    // In order: a3's badge before a4's.
    let order: Vec<String> = spooled(&spool_3)
        .iter()
        .map(|p| pdf_text(p).unwrap())
        .collect();
    assert!(
        order[0].contains("Ada") && order[1].contains("Иван"),
        "{order:?}"
    );

    // A printer that refuses the document: the job fails with the printer's reason, in the API
    // and on the kiosk's MQTT topic.
    let admin = Admin::new(&venued);
    let password = admin.device("k2", "kiosk").await.unwrap();
    let k2 = hw_tests::basic("k2", &password);
    let raster_port = free_port().unwrap();
    let spool_4 = dnssd.spool("spool-4").unwrap();
    let _raster = IppPrinter::start(&dnssd, "Raster", raster_port, "image/pwg-raster", &spool_4)
        .await
        .unwrap();
    add_printer(
        &admin,
        "desk-2",
        "ipp",
        &format!("ipp://127.0.0.1:{raster_port}/ipp/print"),
        &["k2"],
    )
    .await;
    let result_topic = "venue/default/kiosk/k2/print/result";
    // The printer's first status goes out when its first probe answers, which may be after a
    // subscriber arrives (then live, not retained): wait for it on one connection, then a new
    // subscriber must get it retained.
    let (first, _, _) = kiosk_listening(&venued, "k2", &password, result_topic, "desk-2").await;
    first.vanish();
    let (mut kiosk, status, retained) =
        kiosk_listening(&venued, "k2", &password, result_topic, "desk-2").await;
    assert!(retained && status["state"].is_string(), "{status}");
    let (_, answer) = check_in(
        &venued,
        &k2,
        "c-8",
        json!({"attendee_id": "a5", "badge": "print"}),
    )
    .await;
    let job = answer["badge"]["job_id"].as_i64().unwrap();
    let failed = job_in(&venued, job, "failed").await;
    let reason = failed["detail"].as_str().unwrap_or_default().to_string();
    // ippeveprinter answers `client-error-attributes-or-values-not-supported` naming the
    // document format; other printers say `client-error-document-format-not-supported`.
    assert!(
        reason.starts_with("the printer refused the badge: client-error-"),
        "{failed}"
    );
    assert!(reason.contains("document-format"), "{failed}");
    loop {
        let (message, _) = kiosk
            .message_on(result_topic, Duration::from_secs(30))
            .await
            .unwrap();
        if message["job"]["state"] == "failed" {
            assert_eq!(message["job"]["id"], job);
            assert_eq!(message["job"]["detail"], reason.as_str());
            break;
        }
    }
    assert!(spooled(&spool_4).is_empty());
    // Staff reprint from the kiosk (its own printer), and the kiosk sees only its own jobs.
    let reprint = reqwest::Client::new()
        .post(venued.url("/api/v1/print/jobs"))
        .header("authorization", &k2)
        .json(&json!({"attendee_id": "a5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reprint.status(), 201);
    let listed: Value = reqwest::Client::new()
        .get(venued.url("/api/v1/print/jobs"))
        .header("authorization", &k2)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{listed}");
    assert!(
        jobs.iter().all(|j| j["requested_by"] == "device:k2"),
        "{listed}"
    );
}

/// A Zebra-style printer: the test listens on TCP as a ZPL printer's port 9100 does and checks
/// what arrives.
#[tokio::test]
async fn zpl_badges_carry_the_name_as_text_and_the_ticket_code_as_a_qr_command() {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = sink.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let venued = builder(&dir.path().join("data")).spawn().await.unwrap();
    let admin = Admin::new(&venued);
    admin
        .import_csv(
            "id,name,ticket_code\nz1,Ada ^XZ Lovelace,TCK-9^9\nz2,Grace Hopper,TCK-2\nz3,Alan Turing,TCK-3\n"
                .into(),
        )
        .await
        .unwrap();
    let password = admin.device("k1", "kiosk").await.unwrap();
    let k1 = hw_tests::basic("k1", &password);
    add_printer(
        &admin,
        "zebra-1",
        "zpl",
        &format!("tcp://127.0.0.1:{port}"),
        &["k1"],
    )
    .await;
    let (status, answer) = check_in(&venued, &k1, "z-1", json!({"attendee_id": "z1"})).await;
    assert_eq!(status, 201, "{answer}");
    // The health check connects too (and sends nothing): keep the connection that sends a label.
    let label = loop {
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(30), sink.accept())
            .await
            .unwrap()
            .unwrap();
        let mut received = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut received))
            .await
            .unwrap()
            .unwrap();
        if !received.is_empty() {
            break received;
        }
    };
    job_in(&venued, answer["badge"]["job_id"].as_i64().unwrap(), "done").await;
    assert!(
        label.starts_with("^XA") && label.trim_end().ends_with("^XZ"),
        "{label}"
    );
    assert_eq!(label.matches("^XA").count(), 1, "{label}");
    assert_eq!(
        label.matches("^XZ").count(),
        1,
        "one label, the name cannot end it: {label}"
    );
    let fields: Vec<String> = label
        .split("^FD")
        .skip(1)
        .map(|f| unescape(f.split("^FS").next().unwrap_or_default()))
        .collect();
    assert!(
        fields.contains(&"Ada ^XZ Lovelace".to_string()),
        "{fields:?}"
    );
    assert!(fields.contains(&"MA,TCK-9^9".to_string()), "{fields:?}");
    assert!(label.contains("^BQN,2,"), "{label}");

    // Over MQTT the check-in takes the same `badge` field: skipped, then printed.
    let result = "venue/default/kiosk/k1/checkin/result";
    let (mut kiosk, _, _) = kiosk_listening(&venued, "k1", &password, result, "zebra-1").await;
    for (attendee, choice) in [("z2", json!("skip")), ("z3", Value::Null)] {
        let mut request =
            json!({"v": 1, "id": format!("mqtt-{attendee}"), "attendee_id": attendee});
        if !choice.is_null() {
            request["badge"] = choice.clone();
        }
        kiosk
            .client
            .publish(
                "venue/default/kiosk/k1/checkin",
                rumqttc::QoS::AtLeastOnce,
                false,
                request.to_string(),
            )
            .await
            .unwrap();
        let (answer, _) = kiosk
            .message_on(result, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(answer["status"], 201, "{answer}");
        let badge = &answer["checkin"]["badge"];
        if choice.is_null() {
            let job = badge["job_id"].as_i64().unwrap();
            job_in(&venued, job, "done").await;
        } else {
            assert_eq!(badge["state"], "available", "{answer}");
        }
    }
    let label = loop {
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(30), sink.accept())
            .await
            .unwrap()
            .unwrap();
        let mut received = String::new();
        conn.read_to_string(&mut received).await.unwrap();
        if !received.is_empty() {
            break received;
        }
    };
    assert!(
        label.contains("Alan Turing") && !label.contains("Grace"),
        "{label}"
    );
}

/// Rasterises `pdf` at 100 dpi (`pdftoppm`) and compares it with docs/badges/default.png: the
/// same size, and at most 0.5 % of pixels differing by more than a quarter of the grey range
/// (room for a poppler release drawing edges a little differently).
fn compare_with_golden(pdf: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("badge");
    let status = std::process::Command::new("pdftoppm")
        .args(["-r", "100", "-png", "-singlefile"])
        .arg(pdf)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/badges/default.png");
    let (got, want) = (grey(&out.with_extension("png")), grey(&golden));
    assert_eq!((got.0, got.1), (want.0, want.1), "the badge's size changed");
    let differing = got
        .2
        .iter()
        .zip(&want.2)
        .filter(|(a, b)| a.abs_diff(**b) > 64)
        .count();
    assert!(
        differing * 200 <= got.2.len(),
        "{differing} of {} pixels differ from docs/badges/default.png; regenerate it if the change is meant",
        got.2.len()
    );
}

/// A PNG as width, height and one grey level per pixel.
fn grey(path: &Path) -> (u32, u32, Vec<u8>) {
    let mut decoder =
        png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = frame.color_type.samples();
    let levels = buffer[..frame.buffer_size()]
        .chunks_exact(channels)
        .map(|px| {
            (px.iter().take(3).map(|v| u32::from(*v)).sum::<u32>() / channels.min(3) as u32) as u8
        })
        .collect();
    (frame.width, frame.height, levels)
}

/// ZPL's `^FH\` escapes (`\XX`, a hex byte) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = field
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The benchmark of BENCHMARKS.md ("Badge printing"): 20 kiosks (`VENUE_BENCH_KIOSKS`), each
/// with its own `ippeveprinter` printing at once, each checking one person in per second; the time from sending the check-in
/// to the printer accepting the badge's job (its `printing` state on the kiosk's
/// `print/result`), p50 and p99. `VENUE_BENCH_SECS` sets the length (default 60).
#[tokio::test]
#[ignore = "a benchmark: run alone, by hand (BENCHMARKS.md gives the command)"]
async fn bench_checkin_to_badge_accepted_by_the_printer() {
    let kiosks_n: usize = std::env::var("VENUE_BENCH_KIOSKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let secs: usize = std::env::var("VENUE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dnssd = Dnssd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("VENUED_PRINT_TRACK_INTERVAL_MS", "200")
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    let mut csv = String::from("id,name,company,ticket_code\n");
    for n in 0..kiosks_n * secs {
        csv.push_str(&format!("b{n},Attendee Number {n},Company {n},TB{n}\n"));
    }
    admin.import_csv(csv).await.unwrap();
    let mut printers = Vec::new();
    let mut kiosks = Vec::new();
    for k in 0..kiosks_n {
        let id = format!("k{k}");
        let spool = dnssd.spool(&format!("spool-{k}")).unwrap();
        // A printer that prints each badge at once: the figure is the appliance's, not
        // ippeveprinter's simulated 5-15 s of printing.
        let printer = IppPrinter::start_with(
            &dnssd,
            &format!("Desk{k}"),
            free_port().unwrap(),
            "application/pdf",
            &spool,
            &["-c", "/bin/true"],
        )
        .await
        .unwrap();
        let password = admin.device(&id, "kiosk").await.unwrap();
        add_printer(&admin, &format!("p{k}"), "ipp", &printer.uri(), &[&id]).await;
        let topic = format!("venue/default/kiosk/{id}/print/result");
        let (mqtt, _, _) = kiosk_listening(&venued, &id, &password, &topic, &format!("p{k}")).await;
        printers.push(printer);
        kiosks.push((
            id,
            hw_tests::basic(&format!("k{k}"), &password),
            mqtt,
            topic,
        ));
    }
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    for (k, (id, auth, mut mqtt, topic)) in kiosks.into_iter().enumerate() {
        let url = venued.url("/api/v1/checkins");
        runs.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for s in 0..secs {
                tick.tick().await;
                let sent = std::time::Instant::now();
                let response: Value = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("idempotency-key", format!("{id}-{s}"))
                    .json(&json!({"attendee_id": format!("b{}", s * kiosks_n + k)}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let job = response["badge"]["job_id"].as_i64().unwrap();
                loop {
                    let (message, _) = mqtt
                        .message_on(&topic, Duration::from_secs(60))
                        .await
                        .unwrap();
                    if message["job"]["id"] == job && message["job"]["state"] == "printing" {
                        latencies.push(sent.elapsed());
                        break;
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for run in runs {
        all.extend(run.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "check-in to badge accepted by the printer, {kiosks_n} kiosks x 1/s for {secs} s ({} badges, {:.0} s): p50 {:?}, p99 {:?}, max {:?}",
        all.len(),
        started.elapsed().as_secs_f64(),
        at(0.50),
        at(0.99),
        all[all.len() - 1]
    );
    assert_eq!(all.len(), kiosks_n * secs);
}
