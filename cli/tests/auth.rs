//! Sign-in over HTTP against the real binary, with a local SMTP server catching the mail: magic
//! links and codes, refresh rotation with reuse detection, logout and logout-all.

mod common;
mod edge_support;

use edge_support::{Platform, client_from, code, link_token, session, wrong_code};
use serde_json::json;
use std::time::Duration;
use warren_testkit::wait_for;

#[tokio::test]
async fn signing_up_by_link_or_by_code_gives_a_token_pair_and_a_used_link_fails() {
    let platform = Platform::start(&[]).await;

    let mail = platform.request_link("Ada@Example.com").await;
    assert_eq!(mail.to, ["ada@example.com"]);
    assert!(
        mail.text()
            .contains("http://console.test/auth/verify?token="),
        "{}",
        mail.text()
    );
    let token = link_token(&mail);
    let by_link = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "token": token }),
        )
        .await;
    assert_eq!(by_link.status, 200, "{by_link:?}");
    let ada = session(&by_link.body);
    let me = platform.get("/api/v1/users/me", Some(&ada.access)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["email"], "ada@example.com");
    assert_eq!(me.body["status"], "pending");
    assert_eq!(me.body["role"], "guest");

    let again = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "token": token }),
        )
        .await;
    assert_eq!(again.status, 401);
    assert_eq!(again.body["error"]["code"], "invalid_link");

    // The code from a second email signs the same user in; it works once too.
    let mail = platform.request_link("ada@example.com").await;
    let by_code = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "email": "ADA@example.com", "code": code(&mail) }),
        )
        .await;
    assert_eq!(by_code.status, 200, "{by_code:?}");
    let second = session(&by_code.body);
    let me_again = platform.get("/api/v1/users/me", Some(&second.access)).await;
    assert_eq!(me_again.body["id"], me.body["id"], "one user per address");
    let reused = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "email": "ada@example.com", "code": code(&mail) }),
        )
        .await;
    assert_eq!(reused.status, 401);
    // The link of that email was spent with the code.
    let link = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "token": link_token(&mail) }),
        )
        .await;
    assert_eq!(link.status, 401);

    let neither = platform
        .post("/api/v1/auth/verify-magic-link", None, json!({}))
        .await;
    assert_eq!(neither.status, 422);
    let junk = platform
        .post(
            "/api/v1/auth/login/email",
            None,
            json!({ "email": "not-an-address" }),
        )
        .await;
    assert_eq!(junk.status, 422);
    assert_eq!(junk.body["error"]["details"]["fields"][0]["field"], "email");
}

#[tokio::test]
async fn an_expired_link_and_its_code_are_refused() {
    let platform = Platform::start(&[("WARREN_MAGIC_LINK_TTL_SECS", "1")]).await;
    let mail = platform.request_link("late@example.com").await;
    let wrong = wrong_code(&code(&mail));
    // Wrong codes answer `invalid_code` (then `too_many_attempts`) until the link expires.
    wait_for(Duration::from_secs(10), || async {
        let answer = platform
            .post(
                "/api/v1/auth/verify-magic-link",
                None,
                json!({ "email": "late@example.com", "code": wrong }),
            )
            .await;
        (answer.body["error"]["code"] == "link_expired").then_some(())
    })
    .await;
    for body in [
        json!({ "token": link_token(&mail) }),
        json!({ "email": "late@example.com", "code": code(&mail) }),
    ] {
        let answer = platform
            .post("/api/v1/auth/verify-magic-link", None, body)
            .await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["error"]["code"], "link_expired", "{answer:?}");
    }
}

#[tokio::test]
async fn the_sixth_wrong_code_locks_that_code_but_not_the_link_in_the_same_email() {
    let platform = Platform::start(&[]).await;
    let mail = platform.request_link("guess@example.com").await;
    let right = code(&mail);
    let wrong = wrong_code(&right);
    for attempt in 1..=5 {
        let answer = platform
            .post(
                "/api/v1/auth/verify-magic-link",
                None,
                json!({ "email": "guess@example.com", "code": wrong }),
            )
            .await;
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.body["error"]["code"], "invalid_code",
            "attempt {attempt}"
        );
    }
    for code in [&wrong, &right] {
        let answer = platform
            .post(
                "/api/v1/auth/verify-magic-link",
                None,
                json!({ "email": "guess@example.com", "code": code }),
            )
            .await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.body["error"]["code"], "too_many_attempts");
    }
    // The link is a 256-bit secret, not a 6-digit one: guessing codes does not lock it.
    let by_link = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "token": link_token(&mail) }),
        )
        .await;
    assert_eq!(by_link.status, 200, "{by_link:?}");
    // A new email starts the code over.
    let fresh = platform.request_link("guess@example.com").await;
    let answer = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "email": "guess@example.com", "code": code(&fresh) }),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn a_strangers_sign_in_requests_and_wrong_codes_do_not_stop_the_owner_from_signing_in() {
    // Production limits for sign-in emails and codes.
    let platform = Platform::start(&[
        ("WARREN_RATE_LOGIN_PER_EMAIL_PER_HOUR", "5"),
        ("WARREN_RATE_LOGIN_PER_EMAIL_ALL_IPS_PER_HOUR", "20"),
        ("WARREN_RATE_CODE_ATTEMPTS_PER_IP_PER_HOUR", "30"),
    ])
    .await;
    let victim = "victim@example.com";
    let stranger = client_from("127.0.0.2");
    for _ in 0..5 {
        let asked = platform
            .call_from(
                &stranger,
                "POST",
                "/api/v1/auth/login/email",
                None,
                Some(json!({ "email": victim })),
            )
            .await;
        assert_eq!(asked.status, 202, "{asked:?}");
    }
    let sixth = platform
        .call_from(
            &stranger,
            "POST",
            "/api/v1/auth/login/email",
            None,
            Some(json!({ "email": victim })),
        )
        .await;
    assert_eq!(sixth.status, 429, "{sixth:?}");
    let fifth = platform
        .smtp
        .wait_for_mail(victim, 5, Duration::from_secs(10))
        .await;
    let wrong = wrong_code(&code(&fifth));
    for _ in 0..6 {
        let guessed = platform
            .call_from(
                &stranger,
                "POST",
                "/api/v1/auth/verify-magic-link",
                None,
                Some(json!({ "email": victim, "code": wrong })),
            )
            .await;
        assert_eq!(guessed.status, 401, "{guessed:?}");
    }

    // The owner, from their own address: a fresh email, and its code signs them in.
    let fresh = platform.request_link(victim).await;
    let by_code = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "email": victim, "code": code(&fresh) }),
        )
        .await;
    assert_eq!(by_code.status, 200, "{by_code:?}");
    // And the links the stranger had sent them still work: a request never voids a link.
    let first = &platform.smtp.mails_to(victim)[0];
    let by_link = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "token": link_token(first) }),
        )
        .await;
    assert_eq!(by_link.status, 200, "{by_link:?}");
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_rotated_token_revokes_the_whole_session() {
    let platform = Platform::start(&[]).await;
    let first = platform.sign_in("rota@example.com").await;

    let rotated = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": first.refresh }),
        )
        .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let second = session(&rotated.body);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&second.access))
            .await
            .status,
        200
    );

    let reuse = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": first.refresh }),
        )
        .await;
    assert_eq!(reuse.status, 401);
    assert_eq!(reuse.body["error"]["code"], "refresh_token_reused");
    // The whole family is gone: the newest refresh token and its access token too.
    let newest = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": second.refresh }),
        )
        .await;
    assert_eq!(newest.status, 401);
    assert_eq!(newest.body["error"]["code"], "session_revoked");
    let me = platform.get("/api/v1/users/me", Some(&second.access)).await;
    assert_eq!(me.status, 401);

    let garbage = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": "garbage" }),
        )
        .await;
    assert_eq!(garbage.status, 401);
    assert_eq!(garbage.body["error"]["code"], "invalid_token");
}

#[tokio::test]
async fn logout_ends_one_session_and_logout_all_ends_every_session() {
    let platform = Platform::start(&[]).await;
    let one = platform.sign_in("out@example.com").await;
    let two = platform.sign_in("out@example.com").await;

    let out = platform
        .call("POST", "/api/v1/auth/logout", Some(&one.access), None)
        .await;
    assert_eq!(out.status, 204, "{out:?}");
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&one.access))
            .await
            .status,
        401
    );
    let refresh_one = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": one.refresh }),
        )
        .await;
    assert_eq!(refresh_one.status, 401);
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&two.access))
            .await
            .status,
        200
    );

    let three = platform.sign_in("out@example.com").await;
    let all = platform
        .call("POST", "/api/v1/auth/logout/all", Some(&two.access), None)
        .await;
    assert_eq!(all.status, 204, "{all:?}");
    for session in [&two, &three] {
        assert_eq!(
            platform
                .get("/api/v1/users/me", Some(&session.access))
                .await
                .status,
            401
        );
        let refresh = platform
            .post(
                "/api/v1/auth/refresh",
                None,
                json!({ "refresh_token": session.refresh }),
            )
            .await;
        assert_eq!(refresh.status, 401);
    }
    // Signing in again works.
    let four = platform.sign_in("out@example.com").await;
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&four.access))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn tokens_that_are_missing_forged_or_of_another_algorithm_are_refused() {
    let platform = Platform::start(&[]).await;
    let real = platform.sign_in("forge@example.com").await;
    let missing = platform.get("/api/v1/users/me", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"]["code"], "unauthenticated");

    // Same claims, `alg: none` and no signature.
    let claims = real.access.split('.').nth(1).expect("claims part");
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    // Same claims, signature of another key.
    let mut forged = real.access.clone();
    forged.pop();
    forged.push(if real.access.ends_with('A') { 'B' } else { 'A' });
    for token in [none, forged, "not.a.jwt".to_owned()] {
        let answer = platform.get("/api/v1/users/me", Some(&token)).await;
        assert_eq!(answer.status, 401, "{token}");
        assert_eq!(answer.body["error"]["code"], "invalid_token");
    }
}

#[tokio::test]
async fn an_expired_access_token_is_refused_and_the_refresh_token_gets_a_new_one() {
    let platform = Platform::start(&[("WARREN_ACCESS_TOKEN_TTL_SECS", "1")]).await;
    let first = platform.sign_in("short@example.com").await;
    let expired = wait_for(Duration::from_secs(10), || async {
        let answer = platform.get("/api/v1/users/me", Some(&first.access)).await;
        (answer.status == 401).then_some(answer)
    })
    .await;
    assert_eq!(expired.body["error"]["code"], "token_expired");
    let renewed = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": first.refresh }),
        )
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert_eq!(renewed.body["expires_in"], 1);
}
