//! The fake's router in process (`oneshot`, no socket): the rate-limit bucket and its
//! headers, the token check, the server limit.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use payperplay_hetzner::fake::{FakeConfig, FakeState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "router-token";

fn state(adjust: impl FnOnce(&mut FakeConfig)) -> FakeState {
    let mut config = FakeConfig {
        token: TOKEN.to_owned(),
        action_delay_ms: 0,
        ..FakeConfig::default()
    };
    adjust(&mut config);
    FakeState::new(config)
}

async fn call(
    state: &FakeState,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Vec<(String, String)>, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app(state.clone()).oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

fn header(headers: &[(String, String)], name: &str) -> u64 {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .1
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_request_spends_a_token_and_an_empty_bucket_answers_429_with_the_headers() {
    let state = state(|config| {
        config.rate_limit.limit = 3;
        config.rate_limit.refill_per_s = 0.0;
    });
    let (status, headers, _) = call(&state, "GET", "/v1/locations", TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "ratelimit-limit"), 3);
    assert_eq!(header(&headers, "ratelimit-remaining"), 2);
    // Unauthenticated requests count too, as the documentation says.
    let (status, headers, body) = call(&state, "GET", "/v1/servers", "wrong", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(header(&headers, "ratelimit-remaining"), 1);
    call(&state, "GET", "/v1/servers", TOKEN, None).await;
    let (status, headers, body) = call(&state, "GET", "/v1/servers", TOKEN, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(header(&headers, "ratelimit-remaining"), 0);
    assert!(
        header(&headers, "ratelimit-reset") > 1_700_000_000,
        "Reset is a Unix time"
    );
}

#[tokio::test]
async fn the_bucket_refills_at_the_configured_rate_and_reset_says_when_it_is_full() {
    let state = state(|config| {
        config.rate_limit.limit = 3_600;
        config.rate_limit.refill_per_s = 1.0;
    });
    let (_, headers, _) = call(&state, "GET", "/v1/locations", TOKEN, None).await;
    assert_eq!(header(&headers, "ratelimit-remaining"), 3_599);
    let reset = header(&headers, "ratelimit-reset");
    let now_s = payperplay_hetzner::clock::unix_now_ms() / 1_000;
    // One token missing at one per second: full again within about a second.
    assert!(reset >= now_s && reset <= now_s + 2, "reset {reset}, now {now_s}");
}

#[tokio::test]
async fn more_vms_than_the_server_limit_is_resource_limit_exceeded() {
    let state = state(|config| config.server_limit = Some(1));
    let body = |name: &str| Some(json!({"name": name, "server_type": "cpx22", "image": "ubuntu-24.04"}));
    let (status, _, created) = call(&state, "POST", "/v1/servers", TOKEN, body("a")).await;
    assert_eq!(status, StatusCode::CREATED);
    // Without a location the fake picks one that offers the type.
    assert_eq!(created["server"]["location"]["name"], "fsn1");
    let (status, _, error) = call(&state, "POST", "/v1/servers", TOKEN, body("b")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["error"]["code"], "resource_limit_exceeded");
    let (status, _, error) = call(&state, "GET", "/v1/servers?label_selector=a%20in%20(b", TOKEN, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["details"]["fields"][0]["name"], "label_selector");
    let (status, _, error) = call(&state, "GET", "/v1/nothing/here", TOKEN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_page_names_its_neighbours_in_meta_and_in_the_link_header() {
    let state = state(|_| {});
    let (status, headers, body) = call(&state, "GET", "/v1/server_types?per_page=2&page=2", TOKEN, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server_types"].as_array().unwrap().len(), 2);
    assert_eq!(body["meta"]["pagination"]["previous_page"], 1);
    assert_eq!(body["meta"]["pagination"]["next_page"], 3);
    assert_eq!(body["meta"]["pagination"]["last_page"], 3);
    let link = &headers
        .iter()
        .find(|(name, _)| name == "link")
        .expect("a Link header")
        .1;
    assert_eq!(
        link,
        "</v1/server_types?per_page=2&page=1>; rel=\"prev\", </v1/server_types?per_page=2&page=3>; rel=\"next\", \
         </v1/server_types?per_page=2&page=3>; rel=\"last\""
    );
}

#[tokio::test]
async fn a_vm_created_without_start_stays_off_and_has_no_start_action() {
    let state = state(|_| {});
    let body = json!({"name": "cold", "server_type": "cpx22", "image": "ubuntu-24.04", "start_after_create": false});
    let (status, _, created) = call(&state, "POST", "/v1/servers", TOKEN, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["next_actions"], json!([]));
    let id = created["server"]["id"].as_u64().unwrap();
    let (_, _, server) = call(&state, "GET", &format!("/v1/servers/{id}"), TOKEN, None).await;
    assert_eq!(server["server"]["status"], "off");
}
