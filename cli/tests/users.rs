//! `/users/me`, connections and provider API keys over HTTP against the real binary; keys are
//! checked in the `secrets` bucket: encrypted, and gone once deleted.

mod common;
mod edge_support;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use edge_support::{ENCRYPTION_KEY, Platform};
use serde_json::json;

#[tokio::test]
async fn a_user_reads_and_updates_their_profile_and_cannot_unlink_their_last_sign_in_method() {
    let platform = Platform::start(&[]).await;
    let me = platform.sign_in("prof@example.com").await;

    let patched = platform
        .patch(
            "/api/v1/users/me",
            Some(&me.access),
            json!({ "display_name": " Prof ", "avatar_url": "https://img.test/p.png", "show_tool_calls": false }),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["display_name"], "Prof");
    assert_eq!(patched.body["show_tool_calls"], false);
    let read = platform.get("/api/v1/users/me", Some(&me.access)).await;
    assert_eq!(read.body["avatar_url"], "https://img.test/p.png");

    let bad = platform
        .patch(
            "/api/v1/users/me",
            Some(&me.access),
            json!({ "avatar_url": "ftp://x" }),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        bad.body["error"]["details"]["fields"][0]["field"],
        "avatar_url"
    );
    let wrong_type = platform
        .patch(
            "/api/v1/users/me",
            Some(&me.access),
            json!({ "show_tool_calls": "yes" }),
        )
        .await;
    assert_eq!(wrong_type.status, 422, "{wrong_type:?}");

    let connections = platform
        .get("/api/v1/users/me/connections", Some(&me.access))
        .await;
    assert_eq!(connections.status, 200);
    let list = connections.body.as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["kind"], "email");
    assert_eq!(list[0]["external_id"], "prof@example.com");
    let id = list[0]["id"].as_str().expect("id");
    let last = platform
        .delete(
            &format!("/api/v1/users/me/connections/{id}"),
            Some(&me.access),
        )
        .await;
    assert_eq!(last.status, 409);
    assert_eq!(last.body["error"]["code"], "last_auth_method");
    let unknown = platform
        .delete(
            &format!("/api/v1/users/me/connections/{}", uuid::Uuid::new_v4()),
            Some(&me.access),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn api_keys_are_stored_encrypted_listed_masked_and_destroyed_on_delete() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let me = platform.sign_in("keys@example.com").await;
    let secret = "sk-test-0123456789abcdefghijklmnop";

    let added = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&me.access),
            json!({ "provider": "openai", "api_key": secret, "label": "work" }),
        )
        .await;
    assert_eq!(added.status, 201, "{added:?}");
    let key_id = added.body["id"].as_str().expect("id").to_owned();
    assert_eq!(added.body["provider"], "openai");
    assert_eq!(added.body["label"], "work");
    assert_eq!(added.body["fingerprint"], "sk-t…mnop");
    let listed = platform
        .get("/api/v1/users/me/api-keys", Some(&me.access))
        .await;
    assert_eq!(listed.body.as_array().expect("list").len(), 1);
    assert!(
        !listed.body.to_string().contains(secret),
        "never listed in clear"
    );

    // In the secrets bucket: ciphertext that opens with the master key, bound to user and key.
    let js = platform.nats.jetstream().await;
    let kv = js.get_key_value("secrets").await.expect("secrets bucket");
    let sealed = kv
        .get(format!("provider_key.{key_id}"))
        .await
        .expect("kv get")
        .expect("stored");
    assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let user_id = platform
        .get("/api/v1/users/me", Some(&me.access))
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cipher =
        Aes256Gcm::new_from_slice(&hex::decode(ENCRYPTION_KEY).expect("hex")).expect("key");
    let aad = format!("warren/provider_key/{user_id}/{key_id}");
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&sealed[..12]),
            Payload {
                msg: &sealed[12..],
                aad: aad.as_bytes(),
            },
        )
        .expect("opens");
    assert_eq!(plain, secret.as_bytes());

    // The same provider and label replaces the key and destroys the old ciphertext.
    let replaced = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&me.access),
            json!({ "provider": "openai", "api_key": "sk-other-key-000000000000", "label": "work" }),
        )
        .await;
    assert_eq!(replaced.status, 201);
    assert!(
        kv.get(format!("provider_key.{key_id}"))
            .await
            .expect("kv get")
            .is_none()
    );
    let new_id = replaced.body["id"].as_str().expect("id").to_owned();

    let custom = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&me.access),
            json!({ "provider": "custom", "api_key": "k-123" }),
        )
        .await;
    assert_eq!(custom.status, 422, "custom needs a base_url: {custom:?}");
    let unknown_provider = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&me.access),
            json!({ "provider": "acme", "api_key": "k-123" }),
        )
        .await;
    assert_eq!(unknown_provider.status, 422);

    let deleted = platform
        .delete(
            &format!("/api/v1/users/me/api-keys/{new_id}"),
            Some(&me.access),
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert!(
        kv.get(format!("provider_key.{new_id}"))
            .await
            .expect("kv get")
            .is_none()
    );
    let listed = platform
        .get("/api/v1/users/me/api-keys", Some(&me.access))
        .await;
    assert_eq!(listed.body, json!([]));
    let again = platform
        .delete(
            &format!("/api/v1/users/me/api-keys/{new_id}"),
            Some(&me.access),
        )
        .await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_answers_in_the_envelope() {
    let platform = Platform::start(&[("WARREN_HTTP_MAX_BODY_BYTES", "2048")]).await;
    let url = format!("{}/api/v1/auth/login/email", platform.base);
    let http = &platform.http;

    let not_json = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("send");
    assert_eq!(not_json.status(), 400);
    let body: serde_json::Value = not_json.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_json");

    let wrong_type = http
        .post(&url)
        .body("email=a@b.c")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_type.status(), 415);
    let body: serde_json::Value = wrong_type.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let huge = http
        .post(&url)
        .json(&json!({ "email": "x".repeat(10_000) }))
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), 413);
    let body: serde_json::Value = huge.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let missing = platform
        .post("/api/v1/auth/login/email", None, json!({}))
        .await;
    assert_eq!(missing.status, 422);
    let method = platform.call("PUT", "/api/v1/users/me", None, None).await;
    assert_eq!(method.status, 405);
    assert_eq!(method.body["error"]["code"], "method_not_allowed");
    let unknown = platform.get("/api/v1/nope", None).await;
    assert_eq!(unknown.status, 404);
}
