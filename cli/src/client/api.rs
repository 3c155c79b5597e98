//! The platform's REST API as the client uses it: JSON in and out, the error envelope turned
//! into a readable error, and the access token refreshed silently (before it expires, and once
//! more if the edge says it has) with the rotated pair saved at once.

use super::store::{Credentials, Store};
use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Refresh this long before the access token expires.
const REFRESH_MARGIN_SECS: i64 = 60;

/// A token pair as `verify-magic-link` and `refresh` answer it.
#[derive(Debug, Deserialize)]
pub struct TokenPair {
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    /// Whether this sign-in made the user an admin (sign-in only).
    #[serde(default)]
    pub became_admin: bool,
}

impl TokenPair {
    /// The pair as saved credentials.
    pub fn credentials(&self, url: &str, email: &str) -> Credentials {
        Credentials {
            url: url.to_owned(),
            email: email.to_owned(),
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_at: chrono::Utc::now().timestamp() + self.expires_in,
        }
    }
}

/// The error envelope every route answers with.
#[derive(Debug, Deserialize)]
struct Envelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// A refusal from the platform, with its stable code.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code})")]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The stable error code (`not_found`, `quota_exceeded`, …).
    pub code: String,
    /// The platform's sentence.
    pub message: String,
}

/// An HTTP client for one platform, without a sign-in.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    /// A client for the edge at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// The edge's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and decodes the answer (`Value::Null` for an empty body).
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let mut request = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the platform at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            return Err(refusal(status, &bytes).into());
        }
        let body = if bytes.is_empty() {
            b"null".as_slice()
        } else {
            &bytes
        };
        serde_json::from_slice(body).with_context(|| format!("unexpected answer to {path}"))
    }
}

fn refusal(status: StatusCode, bytes: &[u8]) -> Refused {
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(envelope) => Refused {
            status: status.as_u16(),
            code: envelope.error.code,
            message: envelope.error.message,
        },
        Err(_) => Refused {
            status: status.as_u16(),
            code: "http_error".into(),
            message: format!("the platform answered {status}"),
        },
    }
}

/// A signed-in client: every call carries a fresh access token.
pub struct Api {
    http: Http,
    store: Store,
    credentials: Credentials,
}

impl Api {
    /// The signed-in client from the saved credentials for `url`.
    pub fn signed_in(url: &str, store: Store) -> anyhow::Result<Self> {
        let http = Http::new(url);
        let credentials = match store.credentials()? {
            Some(c) if c.url.trim_end_matches('/') == http.base() => c,
            Some(c) => bail!(
                "signed in to {} only: run `warren login` for {}",
                c.url,
                http.base()
            ),
            None => bail!("not signed in: run `warren login`"),
        };
        Ok(Self {
            http,
            store,
            credentials,
        })
    }

    /// The edge's base URL.
    pub fn base(&self) -> &str {
        self.http.base()
    }

    /// An access token valid for at least a minute more, refreshed first if need be.
    pub async fn access_token(&mut self) -> anyhow::Result<String> {
        // Another command (or a refresh this one gave up waiting for) may have rotated the
        // pair since: the file is the truth.
        if let Some(saved) = self.store.credentials()?
            && saved.url == self.credentials.url
        {
            self.credentials = saved;
        }
        if self.credentials.expires_at - chrono::Utc::now().timestamp() < REFRESH_MARGIN_SECS {
            self.refresh().await?;
        }
        Ok(self.credentials.access_token.clone())
    }

    /// Rotates the token pair and saves the new one at once. The refresh token is single use,
    /// so the exchange runs as a task of its own: a caller dropped mid-way (a Ctrl-C, a
    /// `select!`) cannot spend the old token without saving the new one.
    pub async fn refresh(&mut self) -> anyhow::Result<()> {
        let (http, store, old) = (
            self.http.clone(),
            self.store.clone(),
            self.credentials.clone(),
        );
        let exchange = tokio::spawn(async move {
            let body = json!({"refresh_token": old.refresh_token});
            let pair: TokenPair = http
                .send(Method::POST, "/auth/refresh", None, Some(&body))
                .await
                .map_err(|err| match err.downcast_ref::<Refused>() {
                    Some(refused) if refused.status == 401 => {
                        anyhow::anyhow!("the sign-in has expired: run `warren login`")
                    }
                    _ => err,
                })?;
            let credentials = pair.credentials(&old.url, &old.email);
            store.save_credentials(&credentials)?;
            anyhow::Ok(credentials)
        });
        self.credentials = exchange.await.context("refreshing the sign-in")??;
        Ok(())
    }

    /// One authenticated call; a 401 refreshes the tokens and tries once more.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let token = self.access_token().await?;
        match self
            .http
            .send(method.clone(), path, Some(&token), body)
            .await
        {
            Err(err)
                if err
                    .downcast_ref::<Refused>()
                    .is_some_and(|r| r.status == 401) =>
            {
                self.refresh().await?;
                let token = self.credentials.access_token.clone();
                self.http.send(method, path, Some(&token), body).await
            }
            other => other,
        }
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None).await
    }
}
