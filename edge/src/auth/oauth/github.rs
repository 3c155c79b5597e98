//! GitHub: who the access token belongs to (`GET /user`: the numeric id, which survives a
//! renamed login) and their primary address, used only if GitHub marks it verified
//! (`GET /user/emails`).

use super::ProviderIdentity;
use super::flow::PROVIDER_TIMEOUT;
use crate::error::ApiError;
use crate::settings::OAuthProvider;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use warren_domain::user::AuthKind;

#[derive(Deserialize)]
struct User {
    id: i64,
    login: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

async fn get<T: DeserializeOwned>(
    http: &reqwest::Client,
    api: &str,
    path: &str,
    token: &str,
) -> Result<T, ApiError> {
    let url = format!("{}{path}", api.trim_end_matches('/'));
    let failed = |err: reqwest::Error| {
        tracing::warn!(error = %err, %url, "reading the GitHub account failed");
        ApiError::unauthorized(
            "oauth_profile_failed",
            "GitHub did not say who signed in: start again",
        )
    };
    http.get(&url)
        .timeout(PROVIDER_TIMEOUT)
        .bearer_auth(token)
        // GitHub refuses requests without a User-Agent.
        .header(reqwest::header::USER_AGENT, "warren")
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?
        .json::<T>()
        .await
        .map_err(failed)
}

/// Who `access_token` belongs to.
pub async fn identify(
    http: &reqwest::Client,
    config: &OAuthProvider,
    access_token: &str,
) -> Result<ProviderIdentity, ApiError> {
    let api = &config.keys_or_api_url;
    let user: User = get(http, api, "/user", access_token).await?;
    let emails: Vec<Email> = get(http, api, "/user/emails", access_token).await?;
    let verified_email = emails
        .into_iter()
        .find(|email| email.primary && email.verified)
        .map(|email| email.email);
    Ok(ProviderIdentity {
        kind: AuthKind::Github,
        subject: user.id.to_string(),
        verified_email,
        display_name: Some(user.name.unwrap_or(user.login)),
    })
}
