//! Google (OpenID Connect) and GitHub sign-in end to end against the test kit's local provider,
//! which speaks both providers' real protocols: a browser (an HTTP client that keeps the edge's
//! cookie and follows no redirect) goes edge → provider → edge callback → console, and the
//! console trades the handover code for tokens. Forged, replayed and tampered steps are refused
//! with the error envelope; unverified addresses join nothing; identities link and unlink.

mod common;
mod edge_support;

use edge_support::{Answer, Platform};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use warren_testkit::oauth::{OAuthUser, Tamper, TestOAuth};

/// `warren dev` offering Google and GitHub through `oauth`, approving new users at once.
async fn platform(oauth: &TestOAuth) -> Platform {
    let mut env = edge_support::oauth_env(oauth);
    env.push(("WARREN_APPROVAL", "open".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Platform::start(&env).await
}

/// A browser: keeps the `warren_oauth` cookie the edge sets, follows no redirect.
struct Browser<'a> {
    platform: &'a Platform,
    http: reqwest::Client,
    cookie: Option<String>,
}

/// A provider redirect back to the edge, not yet followed.
struct Callback {
    url: String,
}

impl Callback {
    fn param(&self, name: &str) -> String {
        reqwest::Url::parse(&self.url)
            .expect("callback URL")
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {}", self.url))
    }

    /// The same callback with `name` replaced.
    fn with(&self, name: &str, value: &str) -> Callback {
        let mut url = reqwest::Url::parse(&self.url).expect("callback URL");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, old)| {
                let new = if key == name {
                    value.to_owned()
                } else {
                    old.into_owned()
                };
                (key.into_owned(), new)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        Callback {
            url: url.to_string(),
        }
    }
}

/// Where a redirect points and the cookie it sets, if any.
fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("{} without Location", response.status()))
        .to_str()
        .expect("Location")
        .to_owned()
}

impl<'a> Browser<'a> {
    fn new(platform: &'a Platform) -> Self {
        Self {
            platform,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: None,
        }
    }

    fn keep_cookie(&mut self, response: &reqwest::Response) {
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let pair = set
                .to_str()
                .expect("cookie")
                .split(';')
                .next()
                .expect("pair");
            let value = pair.strip_prefix("warren_oauth=").expect("warren_oauth");
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let mut request = self.http.get(url);
        if let Some(cookie) = &self.cookie
            && url.starts_with(&self.platform.base)
        {
            request = request.header(COOKIE, format!("warren_oauth={cookie}"));
        }
        let response = request.send().await.expect("request");
        if url.starts_with(&self.platform.base) {
            self.keep_cookie(&response);
        }
        response
    }

    /// Starts signing in with `provider` and consents at the provider: the redirect back.
    async fn consent(&mut self, provider: &str) -> Callback {
        let start = self
            .get(&format!(
                "{}/api/v1/auth/oauth/{provider}",
                self.platform.base
            ))
            .await;
        assert_eq!(start.status(), 302, "{start:?}");
        assert!(self.cookie.is_some(), "no binding cookie");
        self.consent_at(&location(&start)).await
    }

    /// Consents at the provider's `authorize_url`: the redirect back.
    async fn consent_at(&mut self, authorize_url: &str) -> Callback {
        let consent = self.get(authorize_url).await;
        assert_eq!(consent.status(), 302, "{consent:?}");
        // The provider sends the browser to the console's origin (http://console.test), which
        // the edge serves: here it is the platform's own address.
        let url = location(&consent).replace("http://console.test", &self.platform.base);
        Callback { url }
    }

    /// Starts linking `provider` to the account of `access` and consents: the redirect back.
    async fn link(&mut self, provider: &str, access: &str) -> Callback {
        let started = self
            .http
            .post(format!(
                "{}/api/v1/users/me/connections/{provider}",
                self.platform.base
            ))
            .bearer_auth(access)
            .send()
            .await
            .expect("link");
        assert_eq!(started.status(), 201, "{started:?}");
        self.keep_cookie(&started);
        let body: Value = started.json().await.expect("JSON");
        self.consent_at(body["authorize_url"].as_str().expect("authorize_url"))
            .await
    }

    /// Follows `callback` to the edge: where the edge sends the browser, or its refusal.
    async fn back(&mut self, callback: &Callback) -> Result<String, Answer> {
        let response = self.get(&callback.url).await;
        if response.status() == 302 {
            return Ok(location(&response));
        }
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("error JSON");
        assert!(body["error"]["code"].is_string(), "{body}");
        Err(Answer {
            status,
            body,
            retry_after: None,
        })
    }

    /// Trades the handover in the console's URL for tokens.
    async fn exchange(&mut self, console_url: &str) -> Answer {
        let handover = console_url
            .split_once("#handover=")
            .unwrap_or_else(|| panic!("no handover in {console_url}"))
            .1;
        let mut request = self
            .http
            .post(format!("{}/api/v1/auth/oauth/exchange", self.platform.base))
            .json(&json!({ "handover": handover }));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, format!("warren_oauth={cookie}"));
        }
        let response = request.send().await.expect("exchange");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        Answer {
            status,
            body,
            retry_after: None,
        }
    }

    /// The whole sign-in with `provider`: the access token.
    async fn sign_in(&mut self, provider: &str) -> String {
        let callback = self.consent(provider).await;
        let console = self.back(&callback).await.expect("signed in");
        assert!(
            console.starts_with("http://console.test/auth/oauth#handover="),
            "{console}"
        );
        let signed_in = self.exchange(&console).await;
        assert_eq!(signed_in.status, 200, "{signed_in:?}");
        signed_in.body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }
}

async fn user_id(platform: &Platform, access: &str) -> Value {
    let me = platform.get("/api/v1/users/me", Some(access)).await;
    assert_eq!(me.status, 200, "{me:?}");
    me.body["id"].clone()
}

/// The caller's connections as `kind:external_id`, in order.
async fn connections(platform: &Platform, access: &str) -> Vec<String> {
    let listed = platform
        .get("/api/v1/users/me/connections", Some(access))
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .map(|c| format!("{}:{}", c["kind"].as_str().expect("kind"), c["external_id"]))
        .collect()
}

fn code(refusal: &Answer) -> &str {
    refusal.body["error"]["code"].as_str().expect("code")
}

#[tokio::test]
async fn google_and_github_sign_the_same_person_in_to_one_account() {
    let oauth = TestOAuth::start().await;
    let platform = platform(&oauth).await;
    let offered = platform.get("/api/v1/auth/providers", None).await;
    assert_eq!(
        offered.body["providers"],
        json!(["email", "wallet", "google", "github"])
    );

    oauth.sign_in_as(OAuthUser::new("alice", "Alice@Example.com"));
    let mut browser = Browser::new(&platform);
    let access = browser.sign_in("google").await;
    let alice = user_id(&platform, &access).await;
    let me = platform.get("/api/v1/users/me", Some(&access)).await;
    assert_eq!(me.body["email"], "alice@example.com", "{me:?}");
    let token_request = oauth
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .expect("a token request");
    assert!(
        token_request.body.contains("code_verifier="),
        "PKCE verifier not sent: {}",
        token_request.body
    );
    let authorize = oauth
        .requests()
        .into_iter()
        .find(|r| r.path == "/o/oauth2/v2/auth")
        .expect("authorize");
    for param in [
        "state=",
        "code_challenge=",
        "code_challenge_method=S256",
        "nonce=",
    ] {
        assert!(
            authorize.query.contains(param),
            "{param} missing: {}",
            authorize.query
        );
    }

    // Again: the same account; the handover works once.
    let mut again = Browser::new(&platform);
    let callback = again.consent("google").await;
    let console = again.back(&callback).await.expect("signed in");
    let first = again.exchange(&console).await;
    assert_eq!(first.status, 200, "{first:?}");
    let replayed = again.exchange(&console).await;
    assert_eq!(replayed.status, 401, "{replayed:?}");
    assert_eq!(code(&replayed), "invalid_handover");
    let access_again = first.body["access_token"].as_str().expect("token");
    assert_eq!(user_id(&platform, access_again).await, alice);

    // GitHub with the same verified address joins the same account.
    let github_access = Browser::new(&platform).sign_in("github").await;
    assert_eq!(user_id(&platform, &github_access).await, alice);
    let linked = connections(&platform, &github_access).await;
    let kinds: Vec<&str> = linked
        .iter()
        .map(|c| c.split(':').next().expect("kind"))
        .collect();
    assert_eq!(kinds, ["google", "email", "github"], "{linked:?}");
    // ... and so does an emailed link to that address.
    let by_email = platform.sign_in("alice@example.com").await;
    assert_eq!(user_id(&platform, &by_email.access).await, alice);
}

#[tokio::test]
async fn forged_replayed_and_declined_callbacks_are_refused() {
    let oauth = TestOAuth::start().await;
    let platform = platform(&oauth).await;
    oauth.sign_in_as(OAuthUser::new("bob", "bob@example.com"));

    // A `state` Warren never issued.
    let mut browser = Browser::new(&platform);
    let callback = browser.consent("github").await;
    let forged = browser.back(&callback.with("state", "forged")).await;
    assert_eq!(code(&forged.expect_err("forged state")), "invalid_state");
    // A browser asking for a page is sent to the console with the reason instead.
    let page = browser
        .http
        .get(&callback.with("state", "forged").url)
        .header("accept", "text/html")
        .send()
        .await
        .expect("request");
    assert_eq!(page.status(), 302);
    assert_eq!(
        location(&page),
        "http://console.test/auth/oauth#error=invalid_state"
    );

    // The real callback from another browser (no binding cookie): refused, and the state is
    // spent, so it cannot be retried from the right browser either.
    let mut stranger = Browser::new(&platform);
    let stolen = stranger.back(&callback).await;
    assert_eq!(code(&stolen.expect_err("another browser")), "invalid_state");
    let retried = browser.back(&callback).await;
    assert_eq!(code(&retried.expect_err("spent state")), "invalid_state");

    // A code already exchanged, replayed with a fresh state: the provider refuses it.
    let used = browser.consent("google").await;
    browser.back(&used).await.expect("first use signs in");
    let fresh = browser.consent("google").await;
    let replay = browser.back(&fresh.with("code", &used.param("code"))).await;
    assert_eq!(
        code(&replay.expect_err("replayed code")),
        "oauth_exchange_failed"
    );

    // A code never exchanged, but with another flow's PKCE verifier.
    let mut first = Browser::new(&platform);
    let unexchanged = first.consent("google").await;
    let mut second = Browser::new(&platform);
    let other_flow = second.consent("google").await;
    let wrong_verifier = second
        .back(&other_flow.with("code", &unexchanged.param("code")))
        .await;
    assert_eq!(
        code(&wrong_verifier.expect_err("wrong verifier")),
        "oauth_exchange_failed"
    );

    // Declined at the provider.
    oauth.deny_next();
    let declined = browser.consent("github").await;
    assert_eq!(
        code(&browser.back(&declined).await.expect_err("declined")),
        "oauth_denied"
    );

    // A handover needs the browser that signed in.
    let mut signer = Browser::new(&platform);
    let callback = signer.consent("github").await;
    let console = signer.back(&callback).await.expect("signed in");
    signer.cookie = None;
    let elsewhere = signer.exchange(&console).await;
    assert_eq!(elsewhere.status, 401, "{elsewhere:?}");
    assert_eq!(code(&elsewhere), "invalid_handover");

    // A provider this platform does not offer.
    let unknown = platform.get("/api/v1/auth/oauth/twitter", None).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn id_tokens_not_made_for_this_sign_in_are_refused_and_rotated_keys_are_fetched() {
    let oauth = TestOAuth::start().await;
    let platform = platform(&oauth).await;
    oauth.sign_in_as(OAuthUser::new("carol", "carol@example.com"));
    let carol = Browser::new(&platform).sign_in("google").await;
    let carol = user_id(&platform, &carol).await;

    for tamper in [
        Tamper::WrongAudience,
        Tamper::Expired,
        Tamper::UnknownKey,
        Tamper::AlgHs256,
        Tamper::AlgNone,
        Tamper::WrongIssuer,
        Tamper::WrongNonce,
    ] {
        oauth.tamper_next_id_token(tamper);
        let mut browser = Browser::new(&platform);
        let callback = browser.consent("google").await;
        let refused = browser.back(&callback).await.expect_err("tampered");
        assert_eq!(refused.status, 401, "{tamper:?}: {:?}", refused.body);
        assert_eq!(code(&refused), "invalid_id_token", "{tamper:?}");
    }

    // The provider rotates its key: the edge fetches the new set and signs Carol in.
    let fetched = oauth.jwks_fetches();
    oauth.rotate_key();
    oauth.retire_old_keys();
    let rotated = Browser::new(&platform).sign_in("google").await;
    assert_eq!(user_id(&platform, &rotated).await, carol);
    assert!(
        oauth.jwks_fetches() > fetched,
        "the new key was not fetched"
    );
}

#[tokio::test]
async fn an_unverified_address_joins_no_account() {
    let oauth = TestOAuth::start().await;
    let platform = platform(&oauth).await;
    let dana = platform.sign_in("dana@example.com").await;
    let dana_id = user_id(&platform, &dana.access).await;

    let mut impostor = OAuthUser::new("impostor", "dana@example.com");
    impostor.email_verified = false;
    oauth.sign_in_as(impostor);
    for provider in ["google", "github"] {
        let access = Browser::new(&platform).sign_in(provider).await;
        assert_ne!(user_id(&platform, &access).await, dana_id, "{provider}");
        let me = platform.get("/api/v1/users/me", Some(&access)).await;
        assert_ne!(me.body["email"], "dana@example.com", "{me:?}");
    }
    assert_eq!(
        connections(&platform, &dana.access).await,
        ["email:\"dana@example.com\""]
    );
}

#[tokio::test]
async fn a_signed_in_user_links_and_unlinks_github_and_cannot_take_anothers() {
    let oauth = TestOAuth::start().await;
    let platform = platform(&oauth).await;
    let erin = platform.sign_in("erin@example.com").await;
    let erin_id = user_id(&platform, &erin.access).await;
    oauth.sign_in_as(OAuthUser::new("erin-gh", "erin@work.example"));

    // Link: the API answers where to consent and binds this browser.
    let mut browser = Browser::new(&platform);
    let callback = browser.link("github", &erin.access).await;
    let back = browser.back(&callback).await.expect("linked");
    assert_eq!(back, "http://console.test/settings#linked=github");
    let linked = connections(&platform, &erin.access).await;
    assert_eq!(linked.len(), 2, "{linked:?}");
    assert!(linked[1].starts_with("github:"), "{linked:?}");

    // Either method signs Erin in.
    let by_github = Browser::new(&platform).sign_in("github").await;
    assert_eq!(user_id(&platform, &by_github).await, erin_id);

    // Someone else cannot link Erin's GitHub account to theirs.
    let frank = platform.sign_in("frank@example.com").await;
    let mut franks = Browser::new(&platform);
    let callback = franks.link("github", &frank.access).await;
    let taken = franks.back(&callback).await.expect_err("taken");
    assert_eq!(taken.status, 409, "{:?}", taken.body);
    assert_eq!(code(&taken), "identity_taken");

    // Unlink GitHub; the email is then the last method and cannot go.
    let listed = platform
        .get("/api/v1/users/me/connections", Some(&erin.access))
        .await;
    let id_of = |kind: &str| {
        listed
            .body
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["kind"] == kind)
            .expect(kind)["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let github = id_of("github");
    let email = id_of("email");
    let unlinked = platform
        .delete(
            &format!("/api/v1/users/me/connections/{github}"),
            Some(&erin.access),
        )
        .await;
    assert_eq!(unlinked.status, 204, "{unlinked:?}");
    let last = platform
        .delete(
            &format!("/api/v1/users/me/connections/{email}"),
            Some(&erin.access),
        )
        .await;
    assert_eq!(last.status, 409, "{last:?}");
    assert_eq!(last.body["error"]["code"], "last_auth_method");
    // The released GitHub account now signs in an account of its own.
    let fresh = Browser::new(&platform).sign_in("github").await;
    assert_ne!(user_id(&platform, &fresh).await, erin_id);
}

#[tokio::test]
async fn a_platform_without_oauth_clients_offers_neither_provider() {
    let platform = Platform::start(&[]).await;
    let offered = platform.get("/api/v1/auth/providers", None).await;
    assert_eq!(offered.body["providers"], json!(["email", "wallet"]));
    for provider in ["google", "github"] {
        let start = platform
            .get(&format!("/api/v1/auth/oauth/{provider}"), None)
            .await;
        assert_eq!(start.status, 404, "{provider}");
        let callback = platform
            .get(
                &format!("/api/v1/auth/oauth/{provider}/callback?code=x&state=y"),
                None,
            )
            .await;
        assert_eq!(callback.status, 404, "{provider}");
    }
    let session = platform.sign_in("gina@example.com").await;
    let link = platform
        .post(
            "/api/v1/users/me/connections/google",
            Some(&session.access),
            json!({}),
        )
        .await;
    assert_eq!(link.status, 404, "{link:?}");
}
