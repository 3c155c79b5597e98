//! Signing the CLI in through a browser (device-code style): the device gets a code pair, a
//! person signed in elsewhere approves the short code, and the device's poll gets a session of
//! that person's, once. Early, hasty, unknown and repeated steps are refused with clear codes.

mod client_support;
mod common;
mod edge_support;

use client_support::Client;
use edge_support::{Answer, Platform};
use serde_json::{Value, json};

async fn poll(platform: &Platform, device_code: &str) -> Answer {
    platform
        .post(
            "/api/v1/auth/device/token",
            None,
            json!({ "device_code": device_code }),
        )
        .await
}

fn code(answer: &Answer) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_device_gets_a_session_of_whoever_approves_its_code_once() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let ada = platform.sign_in("ada@example.com").await;
    let ada_id = platform
        .get("/api/v1/users/me", Some(&ada.access))
        .await
        .body["id"]
        .clone();

    let started = platform.post("/api/v1/auth/device", None, json!({})).await;
    assert_eq!(started.status, 201, "{started:?}");
    let device_code = started.body["device_code"].as_str().expect("device_code");
    let user_code = started.body["user_code"].as_str().expect("user_code");
    assert_eq!(
        started.body["verification_uri_complete"],
        format!("http://console.test/device?code={user_code}")
    );

    let early = poll(&platform, device_code).await;
    assert_eq!((early.status, code(&early)), (400, "authorization_pending"));
    let hasty = poll(&platform, device_code).await;
    assert_eq!((hasty.status, code(&hasty)), (400, "slow_down"));

    let anonymous = platform
        .post(
            "/api/v1/auth/device/approve",
            None,
            json!({ "user_code": user_code }),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let wrong = platform
        .post(
            "/api/v1/auth/device/approve",
            Some(&ada.access),
            json!({ "user_code": "BCDF-GHJK" }),
        )
        .await;
    assert_eq!((wrong.status, code(&wrong)), (404, "unknown_code"));
    // Typed as a person would: lower case, without the dash.
    let typed = user_code.replace('-', " ").to_lowercase();
    let approved = platform
        .post(
            "/api/v1/auth/device/approve",
            Some(&ada.access),
            json!({ "user_code": typed }),
        )
        .await;
    assert_eq!(approved.status, 204, "{approved:?}");
    let twice = platform
        .post(
            "/api/v1/auth/device/approve",
            Some(&ada.access),
            json!({ "user_code": user_code }),
        )
        .await;
    assert_eq!(twice.status, 404, "{twice:?}");

    let signed_in = poll(&platform, device_code).await;
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    let access = signed_in.body["access_token"].as_str().expect("token");
    let me = platform.get("/api/v1/users/me", Some(access)).await;
    assert_eq!(me.body["id"], ada_id);
    let replayed = poll(&platform, device_code).await;
    assert_eq!((replayed.status, code(&replayed)), (400, "expired_token"));
    let unknown = poll(&platform, "not-a-device").await;
    assert_eq!(code(&unknown), "expired_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn warren_login_browser_waits_for_the_approval_and_keeps_the_session() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let bea = platform.sign_in("bea@example.com").await;
    let client = Client::new(&platform.base);
    let mut login = client.pty(&["login", "--browser"]);
    let printed = login.expect(", and approve it");
    let user_code = printed
        .split("the code ")
        .nth(1)
        .and_then(|rest| rest.get(..9))
        .unwrap_or_else(|| panic!("no code in {printed:?}"))
        .to_owned();
    assert!(printed.contains("/device?code="), "{printed}");
    let approved = platform
        .post(
            "/api/v1/auth/device/approve",
            Some(&bea.access),
            json!({ "user_code": user_code }),
        )
        .await;
    assert_eq!(approved.status, 204, "{approved:?}");
    login.expect("Signed in to");
    login.expect("bea@example.com");
    assert_eq!(login.exit_code(), 0);
    let (_, out) = client.output(&["agents", "list", "--json"]);
    let agents: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(agents, json!([]));
}
