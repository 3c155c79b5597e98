//! The local OAuth provider over real HTTP: Google's authorization-code flow with PKCE and a
//! verifiable RS256 ID token, single-use codes, GitHub's token endpoint and REST API, key
//! rotation and tampered tokens.

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, USER_AGENT};
use reqwest::{Client, Url};
use serde_json::Value;
use warren_testkit::oauth::{OAuthUser, Tamper, TestOAuth};

const REDIRECT: &str = "http://app.test/callback?from=test";
const FORM: &str = "application/x-www-form-urlencoded";

fn browser() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A PKCE verifier and its S256 challenge.
fn pkce(seed: u8) -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode([seed; 32]);
    let challenge = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, URL_SAFE_NO_PAD.encode(challenge))
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://form.test/").expect("URL");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Goes to `authorize_url` with `params`: the status and the redirect, if any.
async fn authorize(
    http: &Client,
    authorize_url: &str,
    params: &[(&str, &str)],
) -> (u16, Option<Url>) {
    let url = Url::parse_with_params(authorize_url, params).expect("authorize URL");
    let response = http.get(url).send().await.expect("authorize");
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| Url::parse(l.to_str().expect("location")).expect("location URL"));
    (response.status().as_u16(), location)
}

/// Consents at Google with `challenge` and `nonce`: the code.
async fn google_code(oauth: &TestOAuth, http: &Client, challenge: &str, nonce: &str) -> String {
    let (status, location) = authorize(
        http,
        &oauth.google_authorize_url(),
        &[
            ("response_type", "code"),
            ("client_id", oauth.client_id()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email profile"),
            ("state", "st"),
            ("nonce", nonce),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    param(&location.expect("redirect"), "code").expect("code")
}

/// Exchanges `code` at Google (client authenticated with HTTP Basic).
async fn google_token(
    oauth: &TestOAuth,
    http: &Client,
    code: &str,
    verifier: &str,
) -> (u16, Value) {
    let response = http
        .post(oauth.google_token_url())
        .basic_auth(oauth.client_id(), Some(oauth.client_secret()))
        .header(CONTENT_TYPE, FORM)
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ]))
        .send()
        .await
        .expect("token");
    let status = response.status().as_u16();
    (status, response.json().await.expect("token JSON"))
}

fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// The ID token's header and claims, after checking its RS256 signature against the JWKS.
async fn verified(oauth: &TestOAuth, http: &Client, token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header = b64_json(parts[0]);
    assert_eq!(header["alg"], "RS256");
    let jwks: Value = http
        .get(oauth.google_jwks_url())
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JWKS JSON");
    let keys = jwks["keys"].as_array().expect("keys");
    let key = keys
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is published");
    let component = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(key[name].as_str().expect("component"))
            .expect("base64url")
    };
    let public = RsaPublicKeyComponents {
        n: component("n"),
        e: component("e"),
    };
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    let signed = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
        .expect("the signature verifies");
    (header, b64_json(parts[1]))
}

#[tokio::test]
async fn google_code_flow_with_pkce_yields_a_verifiable_id_token() {
    let oauth = TestOAuth::start().await;
    let http = browser();
    let params = |client_id| {
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email profile"),
        ]
    };
    // Nobody signed in at the provider yet; an unknown client gets an error page.
    let (status, _) = authorize(
        &http,
        &oauth.google_authorize_url(),
        &params(oauth.client_id()),
    )
    .await;
    assert_eq!(status, 400);
    oauth.sign_in_as(OAuthUser::new("alice", "alice@example.com"));
    let (status, location) = authorize(
        &http,
        &oauth.google_authorize_url(),
        &params("someone-else"),
    )
    .await;
    assert_eq!((status, location), (400, None));

    let (verifier, challenge) = pkce(7);
    let state = "a state & more/ü=";
    let (status, location) = authorize(
        &http,
        &oauth.google_authorize_url(),
        &[
            ("response_type", "code"),
            ("client_id", oauth.client_id()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email profile"),
            ("state", state),
            ("nonce", "n-0S6_WzA2Mj"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    let location = location.expect("redirect back");
    assert!(
        location
            .as_str()
            .starts_with("http://app.test/callback?from=test&code="),
        "{location}"
    );
    assert_eq!(param(&location, "state").as_deref(), Some(state));
    let code = param(&location, "code").expect("code");

    let (status, body) = google_token(&oauth, &http, &code, &verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let (header, claims) =
        verified(&oauth, &http, body["id_token"].as_str().expect("id_token")).await;
    assert_eq!(header["kid"], oauth.current_kid());
    let alice = OAuthUser::new("alice", "alice@example.com");
    assert_eq!(claims["iss"], oauth.url());
    assert_eq!(claims["aud"], oauth.client_id());
    assert_eq!(claims["azp"], oauth.client_id());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["sub"], alice.sub.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["exp"].as_i64(), Some(iat + 3600));

    let access = body["access_token"].as_str().expect("access_token");
    let info: Value = http
        .get(oauth.google_userinfo_url())
        .bearer_auth(access)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("userinfo JSON");
    assert_eq!(info["sub"], alice.sub.as_str());
    assert_eq!(info["email_verified"], true);
    let bad = http
        .get(oauth.google_userinfo_url())
        .bearer_auth("ya29.nope")
        .send()
        .await
        .expect("userinfo");
    assert_eq!(bad.status(), 401);

    let token_request = oauth
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .expect("recorded");
    assert_eq!(token_request.method, "POST");
    assert!(
        token_request.body.contains("code_verifier="),
        "{}",
        token_request.body
    );
    assert!(
        token_request
            .authorization
            .is_some_and(|a| a.starts_with("Basic "))
    );
}

#[tokio::test]
async fn a_code_is_single_use() {
    let oauth = TestOAuth::start().await;
    oauth.sign_in_as(OAuthUser::new("bob", "bob@example.com"));
    let http = browser();
    let (verifier, challenge) = pkce(1);
    let code = google_code(&oauth, &http, &challenge, "n").await;
    let (first, body) = google_token(&oauth, &http, &code, &verifier).await;
    assert_eq!(first, 200, "{body}");
    let (second, body) = google_token(&oauth, &http, &code, &verifier).await;
    assert_eq!(second, 400);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn the_pkce_verifier_must_match_and_plain_is_refused() {
    let oauth = TestOAuth::start().await;
    oauth.sign_in_as(OAuthUser::new("carol", "carol@example.com"));
    let http = browser();
    let (_, challenge) = pkce(1);
    let (other_verifier, _) = pkce(2);
    let code = google_code(&oauth, &http, &challenge, "n").await;
    let (status, body) = google_token(&oauth, &http, &code, &other_verifier).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    let (status, location) = authorize(
        &http,
        &oauth.google_authorize_url(),
        &[
            ("response_type", "code"),
            ("client_id", oauth.client_id()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "s"),
            ("code_challenge", &other_verifier),
            ("code_challenge_method", "plain"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    let location = location.expect("redirect back");
    assert_eq!(
        param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(param(&location, "state").as_deref(), Some("s"));
}

#[tokio::test]
async fn github_flow_answers_per_accept_and_guards_its_api() {
    let oauth = TestOAuth::start().await;
    let mut user = OAuthUser::new("dana-gh", "dana@example.com");
    user.email_verified = false;
    oauth.sign_in_as(user.clone());
    let http = browser();
    let mut codes = Vec::new();
    for _ in 0..2 {
        let (status, location) = authorize(
            &http,
            &oauth.github_authorize_url(),
            &[
                ("client_id", oauth.client_id()),
                ("redirect_uri", REDIRECT),
                ("scope", "read:user user:email"),
                ("state", "gh"),
            ],
        )
        .await;
        assert_eq!(status, 302);
        let location = location.expect("redirect back");
        assert_eq!(param(&location, "state").as_deref(), Some("gh"));
        codes.push(param(&location, "code").expect("code"));
    }
    let exchange = |code: String, accept: &'static str| {
        let http = http.clone();
        let form = form(&[
            ("client_id", oauth.client_id()),
            ("client_secret", oauth.client_secret()),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ]);
        let url = oauth.github_token_url();
        async move {
            let response = http
                .post(url)
                .header(ACCEPT, accept)
                .header(CONTENT_TYPE, FORM)
                .body(form)
                .send()
                .await
                .expect("token");
            assert_eq!(response.status(), 200);
            response.text().await.expect("body")
        }
    };
    let form = exchange(codes[0].clone(), "*/*").await;
    assert!(form.starts_with("access_token=gho_"), "{form}");
    assert!(form.contains("scope=read%3Auser%2Cuser%3Aemail"), "{form}");
    assert!(form.contains("token_type=bearer"), "{form}");
    let json: Value =
        serde_json::from_str(&exchange(codes[1].clone(), "application/json").await).expect("JSON");
    assert_eq!(json["token_type"], "bearer");
    assert_eq!(json["scope"], "read:user,user:email");
    let bad: Value =
        serde_json::from_str(&exchange("nope".into(), "application/json").await).expect("JSON");
    assert_eq!(bad["error"], "bad_verification_code");
    let token = json["access_token"].as_str().expect("access_token");

    let no_agent = http
        .get(format!("{}/user", oauth.github_api_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("user");
    assert_eq!(no_agent.status(), 403);
    let anonymous = http
        .get(format!("{}/user", oauth.github_api_url()))
        .header(USER_AGENT, "test")
        .send()
        .await
        .expect("user");
    assert_eq!(anonymous.status(), 401);
    let get = |path: &str| {
        http.get(format!("{}{path}", oauth.github_api_url()))
            .header(USER_AGENT, "test")
            .header("authorization", format!("token {token}"))
            .send()
    };
    let me: Value = get("/user")
        .await
        .expect("user")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me["login"], "dana-gh");
    assert_eq!(me["id"], user.github_id);
    let emails: Value = get("/user/emails")
        .await
        .expect("emails")
        .json()
        .await
        .expect("JSON");
    assert_eq!(emails[0]["email"], "dana@example.com");
    assert_eq!(emails[0]["primary"], true);
    assert_eq!(emails[0]["verified"], false);
    assert_eq!(emails[1]["primary"], false);
}

#[tokio::test]
async fn rotated_keys_are_published_and_retired() {
    let oauth = TestOAuth::start().await;
    oauth.sign_in_as(OAuthUser::new("erin", "erin@example.com"));
    let http = browser();
    let jwks = || async {
        let body: Value = http
            .get(oauth.google_jwks_url())
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("JSON");
        body["keys"].as_array().expect("keys").len()
    };
    assert_eq!(jwks().await, 1);
    let kid = oauth.rotate_key();
    assert_eq!(jwks().await, 2);
    let (verifier, challenge) = pkce(3);
    let code = google_code(&oauth, &http, &challenge, "n").await;
    let (_, body) = google_token(&oauth, &http, &code, &verifier).await;
    let (header, _) = verified(&oauth, &http, body["id_token"].as_str().expect("id_token")).await;
    assert_eq!(header["kid"], kid.as_str());
    oauth.retire_old_keys();
    assert_eq!(jwks().await, 1);
    assert_eq!(oauth.jwks_fetches(), 4);
}

#[tokio::test]
async fn tampered_id_tokens_and_denial() {
    let oauth = TestOAuth::start().await;
    oauth.sign_in_as(OAuthUser::new("frank", "frank@example.com"));
    let http = browser();
    let (verifier, challenge) = pkce(4);
    let id_token = async |tamper: Tamper| {
        oauth.tamper_next_id_token(tamper);
        let code = google_code(&oauth, &http, &challenge, "n").await;
        let (_, body) = google_token(&oauth, &http, &code, &verifier).await;
        body["id_token"].as_str().expect("id_token").to_owned()
    };
    let none = id_token(Tamper::AlgNone).await;
    assert!(none.ends_with('.'), "{none}");
    assert_eq!(
        b64_json(none.split('.').next().expect("header"))["alg"],
        "none"
    );
    let hs256 = id_token(Tamper::AlgHs256).await;
    assert_eq!(
        b64_json(hs256.split('.').next().expect("header"))["alg"],
        "HS256"
    );
    let wrong_aud = id_token(Tamper::WrongAudience).await;
    let (_, claims) = verified(&oauth, &http, &wrong_aud).await;
    assert_eq!(claims["aud"], "another-client.apps.example");
    let unknown = id_token(Tamper::UnknownKey).await;
    let kid = b64_json(unknown.split('.').next().expect("header"))["kid"].clone();
    assert_ne!(kid, oauth.current_kid().as_str());
    // Only the next token is tampered.
    let sound = id_token(Tamper::WrongNonce).await;
    let (_, claims) = verified(&oauth, &http, &sound).await;
    assert_eq!(claims["nonce"], "not-the-nonce");
    let code = google_code(&oauth, &http, &challenge, "n").await;
    let (_, body) = google_token(&oauth, &http, &code, &verifier).await;
    let (_, claims) = verified(&oauth, &http, body["id_token"].as_str().expect("id_token")).await;
    assert_eq!(claims["nonce"], "n");

    oauth.deny_next();
    let (status, location) = authorize(
        &http,
        &oauth.github_authorize_url(),
        &[
            ("client_id", oauth.client_id()),
            ("redirect_uri", "http://app.test/cb"),
            ("state", "x y"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    let location = location.expect("redirect back");
    assert!(
        location
            .as_str()
            .starts_with("http://app.test/cb?error=access_denied")
    );
    assert_eq!(param(&location, "state").as_deref(), Some("x y"));
}
