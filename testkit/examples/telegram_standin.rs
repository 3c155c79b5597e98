//! A Telegram stand-in to try the bot by hand: the test kit's fake Bot API on a local port, and
//! this terminal as one Telegram user's private chat with the bot.
//!
//! ```text
//! cargo run -p warren-testkit --example telegram_standin
//! # it prints the two variables to start warren with, e.g.
//! WARREN_TELEGRAM_API_URL=http://127.0.0.1:PORT WARREN_TELEGRAM_TOKEN=... warren dev
//! ```
//!
//! Each line typed is a message to the bot (`/start`, `/help`, `hello`, …). `!doc PATH` sends
//! a file as a document, `!tap MESSAGE_ID DATA` presses a button under one of the bot's
//! messages, `!as ID NAME` switches to another Telegram user. What the bot sends, drafts and
//! edits included, is printed as it arrives; documents it sends are saved to the current
//! directory.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;
use warren_testkit::telegram::{TestTelegram, TgUser};

#[tokio::main]
async fn main() {
    let tg = TestTelegram::start().await;
    println!(
        "Telegram stand-in ready. Start warren with:\n  WARREN_TELEGRAM_API_URL={} WARREN_TELEGRAM_TOKEN={} warren dev\n\
         Type messages for the bot; !doc PATH, !tap MESSAGE_ID DATA, !as ID NAME, !quit.",
        tg.api_url(),
        tg.token()
    );
    let (lines, mut input) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut user = TgUser::new(1001, "You");
    let mut shown: HashMap<(i64, i64), String> = HashMap::new();
    let mut drafts_shown: HashMap<i64, usize> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            line = input.recv() => {
                let Some(line) = line else { break };
                let line = line.trim();
                if line == "!quit" {
                    break;
                } else if let Some(path) = line.strip_prefix("!doc ") {
                    match std::fs::read(path) {
                        Ok(bytes) => {
                            let name = std::path::Path::new(path)
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_else(|| "file".into());
                            tg.send_document(&user, &name, bytes, None);
                        }
                        Err(err) => println!("!! cannot read {path}: {err}"),
                    }
                } else if let Some(rest) = line.strip_prefix("!tap ") {
                    match rest.split_once(' ').and_then(|(id, data)| Some((id.parse().ok()?, data))) {
                        Some((message_id, data)) => {
                            tg.press_button(&user, user.id, message_id, data);
                        }
                        None => println!("!! usage: !tap MESSAGE_ID DATA"),
                    }
                } else if let Some(rest) = line.strip_prefix("!as ") {
                    match rest.split_once(' ').and_then(|(id, name)| Some((id.parse().ok()?, name))) {
                        Some((id, name)) => {
                            user = TgUser::new(id, name);
                            println!("-- you are now {name} ({id})");
                        }
                        None => println!("!! usage: !as ID NAME"),
                    }
                } else if !line.is_empty() {
                    tg.send_text(&user, line);
                }
            }
            _ = tick.tick() => {
                for chat in [user.id] {
                    let drafts = tg.drafts(chat);
                    let seen = drafts_shown.entry(chat).or_default();
                    for draft in &drafts[*seen..] {
                        println!("   (draft) {}", draft.replace('\n', "\n           "));
                    }
                    *seen = drafts.len();
                    for message in tg.messages(chat) {
                        let key = (chat, message.message_id);
                        let text = match &message.document {
                            Some((name, bytes)) => {
                                let saved = std::fs::write(name, bytes).map(|()| "saved here").unwrap_or("not saved");
                                format!("[document {name}, {} bytes, {saved}] {}", bytes.len(), message.caption.clone().unwrap_or_default())
                            }
                            None => message.text.clone(),
                        };
                        let buttons = message.button_data();
                        let text = if buttons.is_empty() { text } else { format!("{text}\n   buttons: {}", buttons.join("  ")) };
                        if shown.get(&key) != Some(&text) {
                            let verb = if shown.contains_key(&key) { "edited" } else { "bot" };
                            println!("#{} {verb}: {}", message.message_id, text.replace('\n', "\n   "));
                            shown.insert(key, text);
                        }
                    }
                }
            }
        }
    }
}
