//! `warren connect telegram`: a one-time code that links a Telegram account to the signed-in
//! one (`POST /users/me/connections/telegram`), to send the platform's bot as `/start <code>`.

use super::api::Api;
use super::render::Printer;
use super::store::Store;
use crate::config::ClientConfig;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

/// `warren connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    client: ClientConfig,
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Debug, clap::Subcommand)]
enum Kind {
    /// Link a Telegram account: prints the `/start <code>` to send the platform's bot.
    Telegram,
}

/// Runs `warren connect …`.
pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(args.client.json);
    let mut api = Api::signed_in(&args.client.url, Store::new(args.client.dir()?))?;
    match args.kind {
        Kind::Telegram => {
            let code: Value = api
                .call(
                    Method::POST,
                    "/users/me/connections/telegram",
                    Some(&serde_json::json!({})),
                )
                .await?;
            printer.answer(&code, || {
                format!(
                    "send this to the platform's Telegram bot within {} minutes:\n\n  {}\n",
                    code["expires_in"].as_i64().unwrap_or(600) / 60,
                    code["command"].as_str().unwrap_or_default()
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
