//! Demo mode (`venued --demo`): a sample event so every feature has something to show without
//! an attendee list, beacons or kiosks. Nothing here runs unless `--demo` is given.
//!
//! The seed is applied once (remembered in `meta`), as ordinary ops, so it syncs and merges
//! like real data. The demo kiosk gets a fresh password on every demo start, since only its
//! hash is stored.

use serde_json::{Value, json};

use crate::domain::DomainError;
use crate::domain::devices::{self, DeviceKind};
use crate::store::{Store, meta};

/// The demo kiosk's device id.
pub const DEMO_KIOSK_ID: &str = "kiosk-demo";
/// How many attendees the demo seeds.
pub const DEMO_ATTENDEES: usize = 300;
/// The iBeacon proximity UUID of demo badges and venue beacons.
const DEMO_BEACON_UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";

const ZONES: &[(&str, &str, u32)] = &[
    ("hall-a", "Hall A", 800),
    ("hall-b", "Hall B", 500),
    ("foyer", "Foyer", 1200),
    ("workshop-1", "Workshop room 1", 60),
    ("workshop-2", "Workshop room 2", 60),
];

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Barbara",
    "Edsger",
    "Frances",
    "Dennis",
    "Radia",
    "Ken",
    "Margaret",
    "Donald",
    "Hedy",
    "Linus",
    "Sophie",
    "Tim",
    "Katherine",
    "John",
    "Mary",
    "Leslie",
    "Anita",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Ritchie",
    "Perlman",
    "Thompson",
    "Hamilton",
    "Knuth",
    "Lamarr",
    "Torvalds",
    "Wilson",
    "Berners-Lee",
];
const COMPANIES: &[&str] = &[
    "Acme",
    "Initech",
    "Globex",
    "Hooli",
    "Umbrella",
    "Stark Industries",
];

/// What demo mode set up.
#[derive(Debug, Clone)]
pub struct DemoInfo {
    /// The demo kiosk's id.
    pub kiosk_id: String,
    /// Its password, valid until the next demo start.
    pub kiosk_password: String,
    /// Whether the sample data was written now (false when an earlier start had seeded it).
    pub seeded_now: bool,
}

/// The `meta` key set once the sample data is in.
const SEEDED: &str = "demo_seeded";

/// Seeds the sample event (once) and (re)creates the demo kiosk.
pub async fn seed(store: &Store, event_id: &str) -> Result<DemoInfo, DomainError> {
    let event = event_id.to_string();
    let seeded_now = store
        .write(move |ctx| {
            if meta::get(ctx.conn(), SEEDED)?.is_some() {
                return Ok(false);
            }
            for (kind, id, body) in sample(&event) {
                let op = ctx.new_op(&event, kind, &id, body);
                ctx.apply(&op)?;
            }
            meta::set(ctx.conn(), SEEDED, &event)?;
            Ok::<_, DomainError>(true)
        })
        .await?;
    let kiosk_password = match devices::reset_password(store, DEMO_KIOSK_ID.to_string()).await {
        Ok(password) => password,
        Err(DomainError::NotFound(_)) => {
            devices::create(
                store,
                event_id,
                DEMO_KIOSK_ID.into(),
                DeviceKind::Kiosk,
                "Demo check-in kiosk".into(),
            )
            .await?
            .1
        }
        Err(e) => return Err(e),
    };
    Ok(DemoInfo {
        kiosk_id: DEMO_KIOSK_ID.into(),
        kiosk_password,
        seeded_now,
    })
}

/// The sample data as `(op kind, entity id, body)`.
fn sample(event: &str) -> Vec<(&'static str, String, Value)> {
    let mut out = vec![(
        "event.upsert",
        event.to_string(),
        json!({"name": "Demo Conference", "timezone": "Europe/Berlin"}),
    )];
    for (i, (id, name, capacity)) in ZONES.iter().enumerate() {
        out.push((
            "zone.upsert",
            (*id).into(),
            json!({"name": name, "capacity": capacity}),
        ));
        out.push((
            "beacon.upsert",
            format!("ibeacon:{DEMO_BEACON_UUID}:1:{}", i + 1),
            json!({"kind": "venue", "zone_id": id, "label": format!("{name} wall beacon")}),
        ));
    }
    let sessions = [
        ("keynote", "Opening keynote", "hall-a", "09:00", "10:00"),
        (
            "rust-at-the-edge",
            "Rust at the edge",
            "hall-a",
            "10:30",
            "11:15",
        ),
        (
            "offline-first",
            "Offline-first sync that converges",
            "hall-b",
            "10:30",
            "11:15",
        ),
        (
            "ble-badges",
            "What BLE badges can and cannot tell you",
            "hall-b",
            "11:30",
            "12:15",
        ),
        (
            "workshop-sqlite",
            "Workshop: SQLite in production",
            "workshop-1",
            "13:30",
            "15:00",
        ),
        (
            "workshop-mqtt",
            "Workshop: MQTT for signage",
            "workshop-2",
            "13:30",
            "15:00",
        ),
        ("lightning", "Lightning talks", "hall-a", "15:30", "16:30"),
        ("closing", "Closing and prizes", "hall-a", "17:00", "17:30"),
    ];
    for (id, title, zone, start, end) in sessions {
        out.push((
            "session.upsert",
            id.into(),
            json!({"title": title, "zone_id": zone,
                   "starts_at": format!("2026-11-23T{start}:00+01:00"),
                   "ends_at": format!("2026-11-23T{end}:00+01:00")}),
        ));
    }
    let privacy = ["venue", "zone", "precise", "hidden"];
    for n in 1..=DEMO_ATTENDEES {
        let first = FIRST[n % FIRST.len()];
        let last = LAST[(n / FIRST.len()) % LAST.len()];
        let badge = format!("ibeacon:{DEMO_BEACON_UUID}:2:{n}");
        out.push((
            "beacon.upsert",
            badge.clone(),
            json!({"kind": "badge", "label": format!("badge {n}")}),
        ));
        out.push((
            "attendee.upsert",
            format!("att-{n:04}"),
            json!({
                "name": format!("{first} {last}"),
                "email": format!("{}.{}{n}@example.org", first.to_lowercase(), last.to_lowercase()),
                "company": COMPANIES[n % COMPANIES.len()],
                "ticket_code": format!("DEMO-{n:04}"),
                "badge_beacon_id": badge,
                "privacy": privacy[n % privacy.len()],
            }),
        ));
    }
    out
}
