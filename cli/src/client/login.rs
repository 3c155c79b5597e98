//! `warren login`: an email, then the 6-digit code from the sign-in email; or, with
//! `--browser`, a code the person approves in the console where they are signed in (by any
//! method: Google, GitHub, a wallet, email), while the CLI polls. The token pair is kept in the
//! client's directory, owner-only. The first person to sign in to a platform
//! without admins becomes its admin; on a platform that approves users, a new user is told
//! they wait for an admin.

use super::api::{Http, TokenPair};
use super::render::Printer;
use super::store::Store;
use crate::config::ClientConfig;
use anyhow::{Context, bail};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// `warren login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    client: ClientConfig,
    /// Your email address (asked for if left out).
    #[arg(long, conflicts_with = "browser")]
    email: Option<String>,
    /// Sign in through the web console instead (any sign-in method it offers): open the
    /// printed page and approve the code shown.
    #[arg(long)]
    browser: bool,
}

#[derive(Deserialize)]
struct Me {
    status: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

/// `POST /auth/device`'s answer.
#[derive(Deserialize)]
struct DeviceCodes {
    device_code: String,
    user_code: String,
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
}

/// Runs `warren login`.
pub async fn run(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(args.client.json);
    let store = Store::new(args.client.dir()?);
    let http = Http::new(&args.client.url);
    if args.browser {
        return by_browser(&printer, &store, &http).await;
    }
    let email = match args.email {
        Some(email) => email,
        None => ask("Email: ")?,
    };
    let _: Value = http
        .send(
            Method::POST,
            "/auth/login/email",
            None,
            Some(&json!({"email": email})),
        )
        .await?;
    printer.note(&format!(
        "A sign-in email with a 6-digit code was sent to {email}."
    ));
    let mut attempts = 0;
    let pair: TokenPair = loop {
        let code = ask("Code: ")?;
        let body = json!({"email": email, "code": code.trim()});
        match http
            .send(Method::POST, "/auth/verify-magic-link", None, Some(&body))
            .await
        {
            Ok(pair) => break pair,
            Err(err) if attempts < 2 && err.downcast_ref::<super::api::Refused>().is_some() => {
                attempts += 1;
                eprintln!("{err}; try again");
            }
            Err(err) => return Err(err),
        }
    };
    store.save_credentials(&pair.credentials(http.base(), &email))?;
    let me: Me = http
        .send(Method::GET, "/users/me", Some(&pair.access_token), None)
        .await?;
    let summary = json!({
        "email": email, "status": me.status, "role": me.role, "became_admin": pair.became_admin,
    });
    printer.answer(&summary, || {
        let mut text = format!("Signed in to {} as {email}", http.base());
        if pair.became_admin {
            text.push_str(" (you are its admin: the first to sign in)");
        }
        if me.status == "pending" {
            text.push_str("\nYour account waits for an admin's approval.");
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// `warren login --browser`: a device code, approved in the console; polls until then.
async fn by_browser(printer: &Printer, store: &Store, http: &Http) -> anyhow::Result<ExitCode> {
    let codes: DeviceCodes = http.send(Method::POST, "/auth/device", None, None).await?;
    printer.note(&format!(
        "Open {} in a browser where you are signed in (or sign in there), check that it shows \
         the code {}, and approve it. Waiting up to {} minutes…",
        codes.verification_uri_complete,
        codes.user_code,
        codes.expires_in / 60
    ));
    let mut interval = std::time::Duration::from_secs(codes.interval.max(1));
    let body = json!({"device_code": codes.device_code});
    let pair: TokenPair = loop {
        tokio::time::sleep(interval).await;
        match http
            .send(Method::POST, "/auth/device/token", None, Some(&body))
            .await
        {
            Ok(pair) => break pair,
            Err(err) => match err.downcast_ref::<super::api::Refused>() {
                Some(refused) if refused.code == "authorization_pending" => {}
                Some(refused) if refused.code == "slow_down" => {
                    interval += std::time::Duration::from_secs(5);
                }
                _ => return Err(err),
            },
        }
    };
    let me: Me = http
        .send(Method::GET, "/users/me", Some(&pair.access_token), None)
        .await?;
    let who = me
        .email
        .clone()
        .or(me.display_name.clone())
        .unwrap_or_else(|| "your account".to_owned());
    store.save_credentials(&pair.credentials(http.base(), &who))?;
    let summary = json!({"email": me.email, "status": me.status, "role": me.role});
    printer.answer(&summary, || {
        let mut text = format!("Signed in to {} as {who}", http.base());
        if me.status == "pending" {
            text.push_str("\nYour account waits for an admin's approval.");
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// A line from the terminal after `prompt`.
fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the terminal")?;
    if read == 0 {
        bail!("no input");
    }
    Ok(line.trim().to_owned())
}
