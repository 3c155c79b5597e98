//! A Google and GitHub stand-in to try "Continue with Google/GitHub" by hand: the test kit's
//! local OAuth/OIDC provider on a local port, consenting at once as the person typed here.
//!
//! ```text
//! cargo run -p warren-testkit --example oauth_standin -- you@example.com
//! # it prints the variables to start warren with (WARREN_OAUTH_GOOGLE_*, WARREN_OAUTH_GITHUB_*)
//! ```
//!
//! Open the console, press "Continue with Google" or "… GitHub": the stand-in signs you in as
//! the address given (verified). Each line typed afterwards changes who signs in next:
//! `ADDRESS` (verified), `!unverified ADDRESS`, `!deny` (the next consent is declined),
//! `!rotate` (a new signing key), `!quit`.

use std::io::BufRead;
use warren_testkit::oauth::{OAuthUser, TestOAuth};

fn person(address: &str, verified: bool) -> OAuthUser {
    let name = address.split('@').next().unwrap_or(address);
    let mut user = OAuthUser::new(name, address);
    user.email_verified = verified;
    user
}

#[tokio::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "you@example.com".to_owned());
    let oauth = TestOAuth::start().await;
    oauth.sign_in_as(person(&address, true));
    let (id, secret) = (oauth.client_id(), oauth.client_secret());
    println!("OAuth stand-in ready, signing in as {address}. Start warren with:");
    println!(
        "  WARREN_OAUTH_GOOGLE_CLIENT_ID={id} WARREN_OAUTH_GOOGLE_CLIENT_SECRET={secret} \\\n  \
         WARREN_OAUTH_GOOGLE_ISSUER={} WARREN_OAUTH_GOOGLE_AUTHORIZE_URL={} \\\n  \
         WARREN_OAUTH_GOOGLE_TOKEN_URL={} WARREN_OAUTH_GOOGLE_JWKS_URL={} \\\n  \
         WARREN_OAUTH_GITHUB_CLIENT_ID={id} WARREN_OAUTH_GITHUB_CLIENT_SECRET={secret} \\\n  \
         WARREN_OAUTH_GITHUB_AUTHORIZE_URL={} WARREN_OAUTH_GITHUB_TOKEN_URL={} \\\n  \
         WARREN_OAUTH_GITHUB_API_URL={} warren dev",
        oauth.url(),
        oauth.google_authorize_url(),
        oauth.google_token_url(),
        oauth.google_jwks_url(),
        oauth.github_authorize_url(),
        oauth.github_token_url(),
        oauth.github_api_url(),
    );
    println!("Type ADDRESS, !unverified ADDRESS, !deny, !rotate or !quit.");
    let (lines, mut input) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = input.recv().await {
        let line = line.trim();
        match line.split_once(' ').unwrap_or((line, "")) {
            ("!quit", _) => break,
            ("!deny", _) => {
                oauth.deny_next();
                println!("the next consent is declined");
            }
            ("!rotate", _) => println!("signing with the new key {}", oauth.rotate_key()),
            ("!unverified", address) if address.contains('@') => {
                oauth.sign_in_as(person(address, false));
                println!("next: {address} (unverified)");
            }
            (address, "") if address.contains('@') => {
                oauth.sign_in_as(person(address, true));
                println!("next: {address} (verified)");
            }
            _ => println!("?"),
        }
    }
}
