//! opsim behaves as the Events API reference says, over real HTTP.

use std::collections::HashSet;

use oprelay_events::{ApiError, Feed, Introspection, IntrospectionV1, ItemUsage, Page};
use opsim::{Fault, FaultKind, RateLimits, RunningSim, SimClock, SimConfig, TokenSpec};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

struct Harness {
    running: RunningSim,
    http: reqwest::Client,
    token: String,
}

impl Harness {
    async fn start(config: SimConfig) -> Self {
        let running = opsim::spawn(config).await.expect("opsim starts");
        let token = running.sim.mint_token(&TokenSpec::default());
        Harness {
            running,
            http: reqwest::Client::new(),
            token,
        }
    }

    async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.post_as(&self.token, path, body).await
    }

    async fn post_as(&self, token: &str, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.running.url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    async fn page(&self, path: &str, body: Value) -> Page<Value> {
        let resp = self.post(path, &body.to_string()).await;
        assert_eq!(resp.status(), 200, "{path} {body}");
        resp.json().await.expect("a page")
    }
}

fn manual_config(backfill: u64, rate: f64) -> (SimConfig, SimClock) {
    let clock = SimClock::manual(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let config = SimConfig {
        backfill,
        backfill_span: Duration::hours(1),
        rate,
        clock: clock.clone(),
        ..SimConfig::default()
    };
    (config, clock)
}

#[tokio::test]
async fn drains_a_backfill_then_idles_on_a_stable_cursor() {
    let (config, _) = manual_config(2_345, 0.0);
    let h = Harness::start(config).await;
    let mut page = h
        .page(
            "/api/v2/itemusages",
            json!({"limit": 1000, "start_time": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let mut uuids = Vec::new();
    let mut requests = 1;
    loop {
        for item in &page.items {
            let ev: ItemUsage = serde_json::from_value(item.clone()).expect("item parses");
            uuids.push(ev.uuid.get().cloned().expect("uuid"));
        }
        if !page.has_more {
            break;
        }
        page = h
            .page("/api/v2/itemusages", json!({"cursor": page.cursor}))
            .await;
        requests += 1;
    }
    assert_eq!(uuids.len(), 2_345);
    assert_eq!(
        uuids.iter().collect::<HashSet<_>>().len(),
        2_345,
        "no duplicates"
    );
    assert_eq!(requests, 3, "1000 + 1000 + 345");
    for (i, uuid) in uuids.iter().enumerate() {
        assert_eq!(
            h.running.sim.event(Feed::ItemUsages, i as u64)["uuid"],
            json!(uuid)
        );
    }

    // Caught up: the same cursor comes back, again and again, with nothing in it.
    let idle = page.cursor.clone();
    for _ in 0..3 {
        let again = h.page("/api/v2/itemusages", json!({"cursor": idle})).await;
        assert_eq!(again.cursor, idle);
        assert!(!again.has_more);
        assert!(again.items.is_empty());
    }
}

#[tokio::test]
async fn live_events_appear_behind_the_idle_cursor() {
    let (config, clock) = manual_config(10, 2.0);
    let h = Harness::start(config).await;
    let first = h
        .page(
            "/api/v2/auditevents",
            json!({"start_time": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        first.items.len(),
        11,
        "10 backfilled + the one arriving at start"
    );
    assert!(!first.has_more);
    clock.advance(Duration::seconds(10));
    let next = h
        .page("/api/v2/auditevents", json!({"cursor": first.cursor}))
        .await;
    assert_eq!(next.items.len(), 20);
    assert_ne!(next.cursor, first.cursor);
}

#[tokio::test]
async fn default_start_is_one_hour_back_and_end_time_bounds_the_cursor() {
    let (config, _) = manual_config(600, 0.0);
    let h = Harness::start(config).await;
    // The backfill spans exactly the last hour, so the default window holds all of it.
    let all = h
        .page("/api/v2/signinattempts", json!({"limit": 1000}))
        .await;
    assert_eq!(all.items.len(), 600);
    let start = OffsetDateTime::from_unix_timestamp(1_800_000_000 - 3600).unwrap();
    let end = start + Duration::minutes(30);
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let half = h
        .page(
            "/api/v2/signinattempts",
            json!({"limit": 1000, "start_time": fmt(start), "end_time": fmt(end)}),
        )
        .await;
    assert_eq!(half.items.len(), 300);
    assert!(!half.has_more);
    let after = h
        .page("/api/v2/signinattempts", json!({"cursor": half.cursor}))
        .await;
    assert!(
        after.items.is_empty(),
        "an end_time cursor never passes its end"
    );
}

#[tokio::test]
async fn bad_requests_get_400_in_both_error_shapes() {
    let h = Harness::start(SimConfig::default()).await;
    let good = h.page("/api/v1/itemusages", json!({"limit": 1})).await;
    let cases = [
        json!({"cursor": good.cursor, "limit": 10}).to_string(),
        json!({"limit": 0}).to_string(),
        json!({"limit": 1001}).to_string(),
        json!({"limit": "ten"}).to_string(),
        json!({"start_time": "yesterday"}).to_string(),
        json!({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"})
            .to_string(),
        json!({"cursor": "bm90IGEgY3Vyc29y"}).to_string(),
        json!({"cursor": 5}).to_string(),
        "[1,2]".to_owned(),
        "{not json".to_owned(),
        String::new(),
    ];
    for body in &cases {
        for (path, current) in [("/api/v1/itemusages", false), ("/api/v2/itemusages", true)] {
            let resp = h.post(path, body).await;
            assert_eq!(resp.status(), 400, "{path} {body}");
            let err: ApiError = resp.json().await.expect("error body");
            assert!(!err.message().is_empty());
            assert_eq!(
                matches!(err, ApiError::Current { status: 400, .. }),
                current,
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn unauthorized_cases_get_401() {
    let (config, clock) = manual_config(5, 0.0);
    let h = Harness::start(config).await;
    let sim = &h.running.sim;
    let only_signins = sim.mint_token(&TokenSpec {
        features: vec![Feed::SignInAttempts],
        expires_in_secs: None,
    });
    let expiring = sim.mint_token(&TokenSpec {
        features: vec![],
        expires_in_secs: Some(60),
    });
    let forged = {
        let mut parts: Vec<String> = h.token.split('.').map(str::to_owned).collect();
        parts[2] = "AAAA".into();
        parts.join(".")
    };
    for (token, why) in [
        ("", "missing"),
        ("not-a-jwt", "malformed"),
        (forged.as_str(), "bad signature"),
        (only_signins.as_str(), "feature missing"),
    ] {
        let resp = h.post_as(token, "/api/v2/auditevents", "{}").await;
        assert_eq!(resp.status(), 401, "{why}");
        let err: ApiError = resp.json().await.expect("error body");
        assert!(err.message().starts_with("Unauthorized"), "{why}");
    }
    assert_eq!(
        h.post_as(&only_signins, "/api/v2/signinattempts", "{}")
            .await
            .status(),
        200
    );

    assert_eq!(
        h.post_as(&expiring, "/api/v1/itemusages", "{}")
            .await
            .status(),
        200
    );
    clock.advance(Duration::seconds(61));
    let resp = h.post_as(&expiring, "/api/v1/itemusages", "{}").await;
    assert_eq!(resp.status(), 401);
    let err: ApiError = resp.json().await.unwrap();
    assert!(
        matches!(err, ApiError::Legacy { .. }),
        "v1 answers in the legacy shape"
    );

    assert!(sim.revoke(&h.token));
    assert_eq!(h.post("/api/v2/itemusages", "{}").await.status(), 401);
    assert!(sim.restore(&h.token));
    assert_eq!(h.post("/api/v2/itemusages", "{}").await.status(), 200);
}

#[tokio::test]
async fn rate_limits_answer_429_with_and_without_retry_after() {
    let (config, clock) = manual_config(5, 0.0);
    let h = Harness::start(config).await;
    for retry_after_header in [false, true] {
        h.running.sim.set_rate_limits(Some(RateLimits {
            per_minute: 3,
            per_hour: 100,
            retry_after_header,
        }));
        clock.advance(Duration::minutes(2));
        for _ in 0..3 {
            assert_eq!(h.post("/api/v2/itemusages", "{}").await.status(), 200);
        }
        let resp = h.post("/api/v2/itemusages", "{}").await;
        assert_eq!(resp.status(), 429);
        let header = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.is_some(), retry_after_header);
        if let Some(secs) = header {
            assert_eq!(secs, "60");
        }
        clock.advance(Duration::seconds(61));
        assert_eq!(
            h.post("/api/v2/itemusages", "{}").await.status(),
            200,
            "window slid"
        );
    }
}

#[tokio::test]
async fn introspection_in_both_shapes() {
    let h = Harness::start(SimConfig::default()).await;
    let get = |path: &str| {
        h.http
            .get(format!("{}{path}", h.running.url()))
            .bearer_auth(&h.token)
            .send()
    };
    let v2: Introspection = get("/api/v2/auth/introspect")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2.features.len(), 3);
    assert_eq!(
        v2.account_uuid.as_deref(),
        Some(h.running.sim.directory().account_uuid.as_str())
    );
    let v1: IntrospectionV1 = get("/api/auth/introspect")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1.features, v2.features);
    let claims = opsim::decode_claims(&h.token).expect("claims");
    assert_eq!(
        claims.aud,
        vec![h.running.addr.to_string()],
        "aud names the simulator's host"
    );
}

#[tokio::test]
async fn v1_endpoints_leave_out_v2_fields() {
    let h = Harness::start(SimConfig::default()).await;
    let v1 = h
        .page(
            "/api/v1/auditevents",
            json!({"limit": 50, "start_time": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let v2 = h
        .page(
            "/api/v2/auditevents",
            json!({"limit": 50, "start_time": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert!(v2.items.iter().all(|e| e.get("account_uuid").is_some()));
    assert!(v1
        .items
        .iter()
        .all(|e| e.get("account_uuid").is_none() && e.get("actor_type").is_none()));
    assert_eq!(v1.items[0]["uuid"], v2.items[0]["uuid"]);
}

#[tokio::test]
async fn injected_faults_then_recovery() {
    let h = Harness::start(SimConfig::default()).await;
    let sim = &h.running.sim;
    let body = json!({"limit": 10}).to_string();

    for status in [500u16, 502, 503] {
        sim.inject(Fault::new(FaultKind::Status {
            status,
            retry_after: None,
        }));
        assert_eq!(h.post("/api/v2/itemusages", &body).await.status(), status);
    }
    sim.inject(Fault::new(FaultKind::Status {
        status: 429,
        retry_after: Some(7),
    }));
    let resp = h.post("/api/v2/itemusages", &body).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");

    sim.inject(Fault::new(FaultKind::Truncate));
    let truncated = h
        .http
        .post(format!("{}/api/v2/itemusages", h.running.url()))
        .bearer_auth(&h.token)
        .body(body.clone())
        .send()
        .await;
    match truncated {
        // Usually the headers arrive and the body stops short of Content-Length; if the
        // connection drops before the headers are read, the request itself fails.
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            assert!(
                resp.bytes().await.is_err(),
                "the body ends before Content-Length"
            );
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    sim.inject(Fault::new(FaultKind::Malformed));
    let resp = h.post("/api/v2/itemusages", &body).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Page<Value>>().await.is_err());

    sim.inject(Fault::new(FaultKind::Slow { delay_ms: 50 }));
    let page = h.page("/api/v2/itemusages", json!({"limit": 10})).await;
    assert_eq!(page.items.len(), 10, "a slow answer is still a full answer");

    // Faults aimed at one feed leave the others alone; the control API accepts them too.
    let resp = h
        .http
        .post(format!("{}/_sim/faults", h.running.url()))
        .json(&json!([{"kind": "status", "status": 503, "count": 2, "feed": "audit_events"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(h.post("/api/v2/itemusages", &body).await.status(), 200);
    assert_eq!(h.post("/api/v2/auditevents", &body).await.status(), 503);
    assert_eq!(h.post("/api/v2/auditevents", &body).await.status(), 503);
    assert_eq!(h.post("/api/v2/auditevents", &body).await.status(), 200);
    assert_eq!(sim.pending_faults(), 0);

    let log = sim.requests();
    assert!(log
        .iter()
        .any(|r| r.status == 503 && r.feed == Some(Feed::AuditEvents)));
}

#[tokio::test]
async fn control_api_mints_and_revokes() {
    let h = Harness::start(SimConfig::default()).await;
    let url = h.running.url();
    let minted: Value = h
        .http
        .post(format!("{url}/_sim/tokens"))
        .json(&json!({"features": ["item_usages"], "expires_in_secs": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().expect("token").to_owned();
    assert_eq!(
        h.post_as(&token, "/api/v2/itemusages", "{}").await.status(),
        200
    );
    assert_eq!(
        h.post_as(&token, "/api/v2/auditevents", "{}")
            .await
            .status(),
        401
    );
    let resp = h
        .http
        .post(format!("{url}/_sim/tokens/revoke"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        h.post_as(&token, "/api/v2/itemusages", "{}").await.status(),
        401
    );
}

/// Pre-rendered pages (benchmarks) are byte for byte the pages generated on request, across
/// page boundaries and at the end of the backfill.
#[tokio::test]
async fn prerendered_pages_are_the_generated_pages() {
    let clock = SimClock::manual(OffsetDateTime::now_utc());
    let config = SimConfig {
        backfill: 25,
        rate_limits: None,
        clock: clock.clone(),
        ..Default::default()
    };
    let plain = Harness::start(config.clone()).await;
    let fast = Harness::start(config).await;
    fast.running.sim.prerender_backfill();
    for feed in Feed::ALL {
        let path = format!("/api/v2/{}", feed.api_name());
        let mut request = r#"{"limit":10,"start_time":"2000-01-01T00:00:00Z"}"#.to_owned();
        for _ in 0..4 {
            let a = plain.post(&path, &request).await.bytes().await.unwrap();
            let b = fast.post(&path, &request).await.bytes().await.unwrap();
            assert_eq!(a, b, "{feed}: {request}");
            let page: Value = serde_json::from_slice(&a).unwrap();
            request = json!({"cursor": page["cursor"]}).to_string();
        }
    }
}
