//! End-to-end support for the REST surface: the real `warren dev` on a TestNats, a TestDb and a
//! TestSmtp, an HTTP client speaking JSON, and sign-in through the emailed link or code.

#![allow(dead_code)]

use crate::common::{Warren, get_json};
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::{Mail, TestDb, TestNats, TestSmtp, wait_until};

/// The encryption key the platform runs with in these tests (so tests can open ciphertexts).
pub const ENCRYPTION_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Where the tests point `WARREN_AGENT_BIN`: nothing, so deployments fail at `installing`.
pub const NO_AGENT_BIN: &str = "/nonexistent/warren-agent";

/// The settings that point the platform's Google and GitHub sign-in at the test kit's provider.
pub fn oauth_env(oauth: &warren_testkit::oauth::TestOAuth) -> Vec<(&'static str, String)> {
    vec![
        (
            "WARREN_OAUTH_GOOGLE_CLIENT_ID",
            oauth.client_id().to_owned(),
        ),
        (
            "WARREN_OAUTH_GOOGLE_CLIENT_SECRET",
            oauth.client_secret().to_owned(),
        ),
        ("WARREN_OAUTH_GOOGLE_ISSUER", oauth.url()),
        (
            "WARREN_OAUTH_GOOGLE_AUTHORIZE_URL",
            oauth.google_authorize_url(),
        ),
        ("WARREN_OAUTH_GOOGLE_TOKEN_URL", oauth.google_token_url()),
        ("WARREN_OAUTH_GOOGLE_JWKS_URL", oauth.google_jwks_url()),
        (
            "WARREN_OAUTH_GITHUB_CLIENT_ID",
            oauth.client_id().to_owned(),
        ),
        (
            "WARREN_OAUTH_GITHUB_CLIENT_SECRET",
            oauth.client_secret().to_owned(),
        ),
        (
            "WARREN_OAUTH_GITHUB_AUTHORIZE_URL",
            oauth.github_authorize_url(),
        ),
        ("WARREN_OAUTH_GITHUB_TOKEN_URL", oauth.github_token_url()),
        ("WARREN_OAUTH_GITHUB_API_URL", oauth.github_api_url()),
    ]
}

/// A running platform and a client for it.
pub struct Platform {
    pub nats: TestNats,
    pub db: TestDb,
    pub smtp: TestSmtp,
    pub warren: Warren,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// The environment `warren dev` was started with.
    pub env: Vec<(String, String)>,
}

/// An answer: status and JSON body (`Null` when empty), plus `Retry-After`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

/// A signed-in session.
#[derive(Clone, Debug)]
pub struct Session {
    pub access: String,
    pub refresh: String,
}

impl Platform {
    /// `warren dev` with `env` on top of the defaults (approval required, generous limits).
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let nats = TestNats::start().await;
        let db = TestDb::create().await;
        let smtp = TestSmtp::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars: Vec<(&str, String)> = [nats.warren_env(), db.warren_env()].concat();
        vars.extend([
            ("WARREN_SMTP_URL", smtp.url()),
            (
                "WARREN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("WARREN_FRONTEND_URL", "http://console.test".into()),
            ("WARREN_ENCRYPTION_KEY", ENCRYPTION_KEY.into()),
            // No agent runtime: the deployer `warren dev` runs fails each deployment at the
            // `installing` step, deterministically and without starting processes.
            ("WARREN_AGENT_BIN", NO_AGENT_BIN.into()),
            ("WARREN_RATE_AUTH_PER_IP_PER_MINUTE", "100000".into()),
            ("WARREN_RATE_LOGIN_PER_EMAIL_PER_HOUR", "100000".into()),
            (
                "WARREN_RATE_LOGIN_PER_EMAIL_ALL_IPS_PER_HOUR",
                "100000".into(),
            ),
            ("WARREN_RATE_CODE_ATTEMPTS_PER_IP_PER_HOUR", "100000".into()),
            ("WARREN_RATE_WRITES_PER_USER_PER_MINUTE", "100000".into()),
            ("WARREN_RATE_WRITES_PER_IP_PER_MINUTE", "100000".into()),
            ("WARREN_RATE_WS_CONNECTS_PER_IP_PER_MINUTE", "100000".into()),
            // Someone who never signs in: the first person to sign in does not become admin.
            // Tests of that bootstrap set this empty.
            ("WARREN_ADMIN_EMAILS", "operator@admin.test".into()),
            // No local model (ADR 31) unless a test asks for it: a platform without a
            // provider then fails runs with `model_not_configured`, and none loads a model.
            ("WARREN_LOCAL_MODEL", "off".into()),
        ]);
        for (key, value) in env {
            vars.retain(|(k, _)| k != key);
            vars.push((key, (*value).to_owned()));
        }
        // A test may choose the address (to know its URL before the start); either way a
        // restart binds the address this platform listened on.
        let (warren, addr) = Warren::spawn_edge(&["dev"], &vars, dir.path(), "warren").await;
        vars.retain(|(key, _)| *key != "WARREN_HTTP_ADDR");
        vars.push(("WARREN_HTTP_ADDR", addr.to_string()));
        let base = format!("http://{addr}");
        wait_healthy(&base, &warren).await;
        Self {
            nats,
            db,
            smtp,
            warren,
            base,
            dir,
            http: reqwest::Client::new(),
            env: vars
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        }
    }

    /// Stops `warren dev` with SIGTERM; whether it exited cleanly within a minute.
    pub async fn stop(&mut self) -> bool {
        self.warren.terminate(Duration::from_secs(60)).await
    }

    /// Starts `warren dev` again on the same log, database and data dir (after [`Self::stop`]),
    /// with `changes` on top of its environment, and waits until it is healthy.
    pub async fn start_again(&mut self, changes: &[(&str, &str)]) {
        for (key, value) in changes {
            self.env.retain(|(k, _)| k != key);
            self.env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        self.warren = Warren::spawn(&["dev"], &env, self.dir.path(), "warren");
        wait_healthy(&self.base, &self.warren).await;
    }

    /// A second `warren edge` on this platform's log and database, with `extra` settings on top
    /// (what a restart with a new configuration would run): its base URL, and the process.
    pub async fn second_edge(&self, extra: &[(&'static str, &str)]) -> (String, Warren) {
        self.edge_with(None, extra).await
    }

    /// [`Self::second_edge`] on `port` (to start one again where it was).
    pub async fn edge_on(&self, port: u16, extra: &[(&'static str, &str)]) -> (String, Warren) {
        self.edge_with(Some(port), extra).await
    }

    /// A second edge on `port`, else on a free port.
    async fn edge_with(
        &self,
        port: Option<u16>,
        extra: &[(&'static str, &str)],
    ) -> (String, Warren) {
        let jwt = std::fs::read_to_string(self.dir.path().join("data/jwt_secret"))
            .expect("the dev JWT secret");
        let mut env = vec![
            ("WARREN_JWT_SECRET", jwt.trim().to_owned()),
            ("WARREN_ENCRYPTION_KEY", ENCRYPTION_KEY.to_owned()),
            ("WARREN_SMTP_URL", self.smtp.url()),
            ("WARREN_FRONTEND_URL", "http://console.test".into()),
            ("WARREN_AGENT_BIN", NO_AGENT_BIN.into()),
        ];
        if let Some(port) = port {
            env.push(("WARREN_HTTP_ADDR", format!("127.0.0.1:{port}")));
        }
        env.extend(self.nats.warren_env());
        env.extend(self.db.warren_env());
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push((key, (*value).to_owned()));
        }
        let name = match port {
            Some(port) => format!("edge-{port}"),
            None => format!("edge-{}", uuid::Uuid::new_v4().simple()),
        };
        let (edge, addr) = Warren::spawn_edge(&["edge"], &env, self.dir.path(), &name).await;
        let base = format!("http://{addr}");
        let health = format!("{base}/api/v1/health");
        wait_until(Duration::from_secs(30), || async {
            matches!(get_json(&health).await, Some((200, _)))
        })
        .await;
        (base, edge)
    }

    /// Sends a request; `body` as JSON when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_from(&self.http, method, path, token, body).await
    }

    /// Sends a request through `client` (e.g. one bound to another source address).
    pub async fn call_from(
        &self,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        if status >= 400 {
            assert!(
                body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                "{status} without the error envelope: {body}"
            );
        }
        Answer {
            status,
            body,
            retry_after,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call("POST", path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call("PATCH", path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call("PUT", path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("DELETE", path, token, None).await
    }

    /// Asks for a sign-in email and returns it (the `n`th mail to `email`).
    pub async fn request_link(&self, email: &str) -> Mail {
        let before = self.smtp.mails_to(email).len();
        let sent = self
            .post("/api/v1/auth/login/email", None, json!({ "email": email }))
            .await;
        assert_eq!(sent.status, 202, "{sent:?}");
        self.smtp
            .wait_for_mail(email, before + 1, Duration::from_secs(10))
            .await
    }

    /// The payloads of `agent`'s commits (`agent.<id>`), oldest first.
    pub async fn agent_commits(&self, agent: &str) -> Vec<String> {
        let js = self.nats.jetstream().await;
        let mut stream = js.get_stream("AGENTS").await.expect("AGENTS stream");
        let last = stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let subject = format!("agent.{agent}");
        let mut commits = Vec::new();
        for seq in 1..=last {
            if let Ok(message) = stream.get_raw_message(seq).await
                && message.subject.as_str() == subject
            {
                commits.push(String::from_utf8_lossy(&message.payload).into_owned());
            }
        }
        commits
    }

    /// `agent`'s events (`{"type", "data"}`, envelope fields alongside), oldest first.
    pub async fn agent_events(&self, agent: &str) -> Vec<Value> {
        self.agent_commits(agent)
            .await
            .iter()
            .map(|commit| serde_json::from_str::<Value>(commit).expect("commit JSON"))
            .flat_map(|commit| commit.as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Signs in through the emailed link.
    pub async fn sign_in(&self, email: &str) -> Session {
        let mail = self.request_link(email).await;
        let answer = self
            .post(
                "/api/v1/auth/verify-magic-link",
                None,
                json!({ "token": link_token(&mail) }),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        session(&answer.body)
    }

    /// Signs in and waits until the user's status is `status` (e.g. after an admin acts).
    pub async fn wait_status(&self, session: &Session, status: &str) {
        wait_until(Duration::from_secs(10), || async {
            self.get("/api/v1/users/me", Some(&session.access))
                .await
                .body["status"]
                == status
        })
        .await;
    }
}

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address is loopback), so a
/// test can be two clients with two addresses.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// The token pair in a sign-in answer.
pub fn session(body: &Value) -> Session {
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0), "{body}");
    Session {
        access: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    }
}

/// The `token` of the verify link in a sign-in email.
pub fn link_token(mail: &Mail) -> String {
    let text = mail.text();
    let start = text
        .find("/auth/verify?token=")
        .unwrap_or_else(|| panic!("no link in {text}"))
        + "/auth/verify?token=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The 6-digit code in a sign-in email.
pub fn code(mail: &Mail) -> String {
    let text = mail.text();
    let start = text
        .find("code: ")
        .unwrap_or_else(|| panic!("no code in {text}"))
        + "code: ".len();
    let code: String = text[start..].chars().take(6).collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{code}");
    code
}

/// A code that is not `code`.
pub fn wrong_code(code: &str) -> String {
    let n: u32 = code.parse().expect("digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

/// Waits up to a minute for `base`'s health route to answer 200.
async fn wait_healthy(base: &str, warren: &Warren) {
    let health = format!("{base}/api/v1/health");
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while !matches!(get_json(&health).await, Some((200, _))) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        started.is_ok(),
        "warren never healthy; log:\n{}",
        warren.log_text()
    );
}
