//! [`TestSmtp`]: a local SMTP server that speaks the real protocol over TCP (greeting, `EHLO`,
//! `MAIL FROM`, `RCPT TO`, `DATA` with dot-unstuffing, `RSET`, `NOOP`, `QUIT`) and keeps every
//! message it accepts, so tests can read the mail the platform sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub to: Vec<String>,
    /// The message as sent (headers, blank line, body), dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Mail {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.data.split_once("\r\n\r\n")?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(current) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    current.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// The body, decoded from quoted-printable when the message says so.
    pub fn text(&self) -> String {
        let body = self
            .data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body);
        let quoted = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|enc| enc.eq_ignore_ascii_case("quoted-printable"));
        if quoted {
            decode_quoted_printable(body)
        } else {
            body.to_owned()
        }
    }
}

/// Decodes quoted-printable text (soft line breaks and `=XX` escapes).
pub fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default)]
struct Inbox {
    mails: Mutex<Vec<Mail>>,
    arrived: Notify,
}

/// A running SMTP server on a free loopback port; stops when dropped.
pub struct TestSmtp {
    port: u16,
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl TestSmtp {
    /// Starts the server.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test SMTP server");
        let port = listener.local_addr().expect("local addr").port();
        let inbox = Arc::new(Inbox::default());
        let accepting = inbox.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, accepting.clone()));
            }
        });
        Self { port, inbox, task }
    }

    /// `smtp://127.0.0.1:<port>`, for `WARREN_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.inbox
            .mails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Messages to `address` so far, oldest first.
    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Waits until `address` has received `count` messages and returns the last; panics after
    /// `timeout`.
    pub async fn wait_for_mail(&self, address: &str, count: usize, timeout: Duration) -> Mail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inbox.arrived.notified();
            let mails = self.mails_to(address);
            if mails.len() >= count {
                return mails[count - 1].clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "no mail #{count} to {address} within {timeout:?} (got {})",
                    mails.len()
                );
            }
        }
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, inbox: Arc<Inbox>) {
    if let Err(err) = converse(stream, &inbox).await {
        eprintln!("test smtp: session ended: {err}");
    }
}

async fn converse(stream: TcpStream, inbox: &Inbox) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP warren-testkit\r\n")
        .await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write
                    .write_all(b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    .await?
            }
            "HELO" => write.write_all(b"250 localhost\r\n").await?,
            "MAIL" => {
                from = address(command);
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "RCPT" => {
                to.push(address(command));
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                if to.is_empty() {
                    write.write_all(b"503 need RCPT first\r\n").await?;
                    continue;
                }
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed.trim_end_matches(['\r', '\n']));
                    data.push_str("\r\n");
                }
                inbox
                    .mails
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(Mail {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                    });
                inbox.arrived.notify_waiters();
                write.write_all(b"250 OK queued\r\n").await?;
            }
            "RSET" => {
                from.clear();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 command not implemented\r\n").await?,
        }
    }
}

/// The address inside `MAIL FROM:<a@b>` / `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or_else(String::new, |(address, _)| address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_soft_breaks_and_escapes_are_decoded() {
        assert_eq!(
            decode_quoted_printable("http://x/a?token=3Dab=\r\ncd\r\n"),
            "http://x/a?token=abcd\r\n"
        );
    }
}
