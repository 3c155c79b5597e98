//! Every rate limit, by name, for every channel: a write is a write whether it came over REST or
//! the gateway, and counts the same (the counts are shared by every edge process:
//! [`crate::ratelimit`]).

use crate::error::ApiError;
use crate::state::AppState;
use std::time::Duration;
use warren_domain::ids::UserId;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// One write (a POST/PUT/PATCH/DELETE, or a gateway method that changes something) by `user`.
pub async fn user_write(state: &AppState, user: UserId) -> Result<(), ApiError> {
    let limit = state.settings.rate.write_per_user_per_minute;
    state
        .limiter
        .check("writes_per_user", &user.to_string(), limit, MINUTE)
        .await
}

/// One write from the client address `ip`.
pub async fn ip_write(state: &AppState, ip: &str) -> Result<(), ApiError> {
    let limit = state.settings.rate.write_per_ip_per_minute;
    state
        .limiter
        .check("writes_per_ip", ip, limit, MINUTE)
        .await
}

/// One sign-in, verify or refresh request from `ip`.
pub async fn auth_request(state: &AppState, ip: &str) -> Result<(), ApiError> {
    let limit = state.settings.rate.auth_per_ip_per_minute;
    state.limiter.check("auth_per_ip", ip, limit, MINUTE).await
}

/// One sign-in email for `email` asked from `ip` (per address and asker, then per address:
/// ADR 12).
pub async fn sign_in_email(state: &AppState, email: &str, ip: &str) -> Result<(), ApiError> {
    let rate = state.settings.rate;
    state
        .limiter
        .check(
            "login_per_email",
            &format!("{email} {ip}"),
            rate.login_per_email_per_hour,
            HOUR,
        )
        .await?;
    state
        .limiter
        .check(
            "login_per_email_all_ips",
            email,
            rate.login_per_email_all_ips_per_hour,
            HOUR,
        )
        .await
}

/// One sign-in code guessed from `ip`.
pub async fn code_attempt(state: &AppState, ip: &str) -> Result<(), ApiError> {
    let limit = state.settings.rate.code_attempts_per_ip_per_hour;
    state
        .limiter
        .check("code_attempts_per_ip", ip, limit, HOUR)
        .await
}

/// One WebSocket connection attempt from `ip`.
pub async fn gateway_connect(state: &AppState, ip: &str) -> Result<(), ApiError> {
    let limit = state.settings.rate.ws_connects_per_ip_per_minute;
    state
        .limiter
        .check("ws_connects_per_ip", ip, limit, MINUTE)
        .await
}
