//! The pages and the on-site sign-in over plain HTTP, against a real `venued`: what a browser
//! relies on (caching, compression, the security headers) and what the sign-in must refuse.
//! `browser.rs` drives the same pages in Chromium.

use hw_tests::{Admin, Venued, VenuedBuilder};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH,
    RETRY_AFTER,
};
use serde_json::{Value, json};

/// A client that leaves compression to the test (reqwest would otherwise negotiate it).
fn client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

async fn venue(dir: &tempfile::TempDir) -> Venued {
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    Admin::new(&venued)
        .import_csv(
            "id,name,email,ticket_code\n\
             a1,Anna van der Berg,anna@example.org,T1\n\
             a2,Ben Okafor,,T2\n"
                .into(),
        )
        .await
        .unwrap();
    venued
}

async fn sign_in(venued: &Venued, ticket: &str, who: &str) -> reqwest::Response {
    client()
        .post(venued.url("/api/v1/attendee/session"))
        .json(&json!({"ticket_code": ticket, "name_or_email": who}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_app_is_served_compressed_revalidated_and_locked_down() {
    let dir = tempfile::tempdir().unwrap();
    let venued = venue(&dir).await;
    let page = client()
        .get(venued.url("/"))
        .header(ACCEPT_ENCODING, "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(h[CONTENT_ENCODING], "gzip");
    assert_eq!(h[CACHE_CONTROL], "no-cache");
    let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["referrer-policy"], "no-referrer");

    // Unchanged: a 304 with no body.
    let again = client()
        .get(venued.url("/"))
        .header(IF_NONE_MATCH, h[ETAG].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    // The page links its script with its version; that URL may be kept for a year.
    let html = client()
        .get(venued.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let link = html
        .split('"')
        .find(|s| s.starts_with("/assets/app.js?v="))
        .expect("the page links a versioned app.js");
    let script = client().get(venued.url(link)).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        script.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // An old version's URL gets today's file, but not for a year.
    let stale = client()
        .get(venued.url("/assets/app.js?v=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.headers()[CACHE_CONTROL], "no-cache");

    // Unknown assets and API paths stay JSON 404s.
    for path in ["/assets/nope.js", "/api/v1/nope"] {
        let r = client().get(venued.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn sign_in_takes_the_last_name_or_email_and_never_says_which_half_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let venued = venue(&dir).await;
    for who in [
        "van der Berg",
        "BERG",
        "anna@example.org",
        "Anna van der Berg",
    ] {
        let r = sign_in(&venued, "T1", who).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{who}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["attendee"]["id"], "a1");
        // The token opens the hub's HTTP side as that attendee.
        let token = body["token"].as_str().unwrap();
        let history = client()
            .get(venued.url("/api/v1/channels/announcements/messages"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(history.status(), StatusCode::OK);
    }
    let wrong_name: Value = sign_in(&venued, "T1", "Okafor").await.json().await.unwrap();
    let wrong_ticket: Value = sign_in(&venued, "T9", "Okafor").await.json().await.unwrap();
    assert_eq!(
        wrong_name, wrong_ticket,
        "the answers tell the halves apart"
    );
    assert_eq!(wrong_name["error"]["code"], "wrong_ticket_or_name");

    let bad = sign_in(&venued, "", "x").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn wrong_sign_ins_are_budgeted_per_ticket_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let venued = venue(&dir).await;
    // Five wrong names for T2, then even the right one waits: guessing a known ticket's
    // holder stays slow.
    for _ in 0..5 {
        assert_eq!(
            sign_in(&venued, "T2", "Wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = sign_in(&venued, "T2", "Okafor").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry > 60,
        "the ticket waits most of its 15 min window, not {retry} s"
    );
    // Another ticket is not held up by it...
    assert_eq!(
        sign_in(&venued, "T1", "Berg").await.status(),
        StatusCode::CREATED
    );
    // ...until this address has failed ten times in the minute (five more here).
    for i in 0..5 {
        assert_eq!(
            sign_in(&venued, &format!("X{i}"), "Wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        sign_in(&venued, "T1", "Berg").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_schedule_lists_each_room_with_its_sessions_in_start_order() {
    let dir = tempfile::tempdir().unwrap();
    let venued = venue(&dir).await;
    let admin = Admin::new(&venued);
    let post = |collection: &'static str, record: Value| {
        let admin = &admin;
        async move {
            let (status, body) = admin
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/admin/{collection}"),
                    Some(record),
                )
                .await
                .unwrap();
            assert!(
                (200..300).contains(&status),
                "{collection}: {status} {body}"
            );
        }
    };
    post(
        "zones",
        json!({"id": "hall-b", "name": "Hall B", "capacity": 120}),
    )
    .await;
    post(
        "zones",
        json!({"id": "hall-a", "name": "Hall A", "capacity": 800}),
    )
    .await;
    post(
        "zones",
        json!({"id": "gone", "name": "Gone", "deleted": true}),
    )
    .await;
    let session = |id: &str, zone: &str, start: &str| {
        json!({"id": id, "title": id, "zone_id": zone,
               "starts_at": format!("2026-11-23T{start}:00+01:00")})
    };
    post("sessions", session("late", "hall-a", "15:00")).await;
    post("sessions", session("early", "hall-a", "09:00")).await;
    post("sessions", session("b", "hall-b", "10:00")).await;
    post("sessions", session("nowhere", "no-such-room", "11:00")).await;
    post(
        "sessions",
        json!({"id": "cancelled", "title": "x", "zone_id": "hall-a", "deleted": true}),
    )
    .await;

    let unauthenticated = client()
        .get(venued.url("/api/v1/schedule"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    let signed: Value = sign_in(&venued, "T1", "Berg").await.json().await.unwrap();
    let schedule: Value = client()
        .get(venued.url("/api/v1/schedule"))
        .bearer_auth(signed["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rooms: Vec<(&str, Vec<&str>)> = schedule["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let ids = r["sessions"].as_array().unwrap();
            (
                r["id"].as_str().unwrap(),
                ids.iter().map(|s| s["id"].as_str().unwrap()).collect(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        vec![("hall-a", vec!["early", "late"]), ("hall-b", vec!["b"])],
        "rooms by name, sessions by start, nothing deleted"
    );
    assert_eq!(schedule["rooms"][0]["capacity"], 800);
    assert_eq!(schedule["elsewhere"][0]["id"], "nowhere");
}

#[tokio::test]
async fn people_are_found_by_any_word_of_their_name_unless_they_hide() {
    let dir = tempfile::tempdir().unwrap();
    let venued = venue(&dir).await;
    Admin::new(&venued)
        .import_csv(
            "id,name,company,privacy\n\
             p1,Carla Okafor,Initech,venue\n\
             p2,Okan Demir,,zone\n\
             p3,Olga Oksana,,hidden\n\
             p4,50%_Off,,venue\n"
                .into(),
        )
        .await
        .unwrap();
    let signed: Value = sign_in(&venued, "T1", "Berg").await.json().await.unwrap();
    let token = signed["token"].as_str().unwrap().to_string();
    let find = |q: &str| {
        client()
            .get(venued.url("/api/v1/people"))
            .query(&[("q", q)])
            .bearer_auth(&token)
            .send()
    };
    let found: Value = find("ok").await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = found["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    // Ben Okafor (a2, from `venue`), Carla Okafor, Okan Demir; not Olga Oksana, who hides.
    assert_eq!(ids, ["a2", "p1", "p2"], "{found}");
    assert_eq!(found["people"][1]["company"], "Initech");
    // Wildcards are literal.
    let literal: Value = find("50%").await.unwrap().json().await.unwrap();
    assert_eq!(literal["people"].as_array().unwrap().len(), 1, "{literal}");
    let wild: Value = find("5_").await.unwrap().json().await.unwrap();
    assert!(wild["people"].as_array().unwrap().is_empty(), "{wild}");
    assert_eq!(
        find("o").await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let anonymous = client()
        .get(venued.url("/api/v1/people?q=ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
