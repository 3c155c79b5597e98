//! The `warren` client driven like a person at a terminal: each command runs on a
//! pseudo-terminal (so Ctrl-C is a real SIGINT from the line discipline), with its own client
//! directory, against a real platform.

#![allow(dead_code)]

use crate::edge_support::{Platform, code};
use rexpect::session::PtySession;
use std::path::PathBuf;
use std::time::Duration;

/// How long one expected piece of output may take.
pub const OUTPUT_TIMEOUT_MS: u64 = 60_000;

/// A person's client: one directory of sign-in and last session, one platform.
pub struct Client {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Client {
    /// A client of the platform at `url`, signed in to nothing yet.
    pub fn new(url: &str) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            url: url.to_owned(),
        }
    }

    /// Where it keeps its sign-in.
    pub fn client_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// `warren <args>` for this client (not started).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("WARREN_URL", &self.url)
            .env("WARREN_CLIENT_DIR", self.client_dir())
            .env("WARREN_CONFIG", self.dir.path().join("absent.toml"))
            .env("TERM", "dumb");
        command
    }

    /// `warren <args>` on a pseudo-terminal.
    pub fn pty(&self, args: &[&str]) -> Pty {
        let session = rexpect::session::spawn_command(self.command(args), Some(OUTPUT_TIMEOUT_MS))
            .unwrap_or_else(|err| panic!("spawn warren {args:?}: {err}"));
        Pty {
            session,
            args: args.join(" "),
        }
    }

    /// `warren <args>` run to its end without a terminal: its exit success and stdout.
    pub fn output(&self, args: &[&str]) -> (bool, String) {
        let out = self.command(args).output().expect("run warren");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "warren {args:?} failed: {stderr}");
        (
            out.status.success(),
            String::from_utf8(out.stdout).expect("utf-8 output"),
        )
    }

    /// Signs in as `email` with `warren login`, typing the code from the sign-in email.
    pub async fn login(&self, platform: &Platform, email: &str) -> Pty {
        let before = platform.smtp.mails_to(email).len();
        let mut login = self.pty(&["login"]);
        login.expect("Email: ");
        login.send_line(email);
        login.expect("Code: ");
        let mail = platform
            .smtp
            .wait_for_mail(email, before + 1, Duration::from_secs(10))
            .await;
        login.send_line(&code(&mail));
        login.expect("Signed in to");
        login
    }
}

/// A command on a pseudo-terminal.
pub struct Pty {
    pub session: PtySession,
    args: String,
}

impl Pty {
    /// Waits for `text` in the output (and consumes everything up to it).
    pub fn expect(&mut self, text: &str) -> String {
        // The reader keeps bytes as Latin-1 characters: look for the UTF-8 bytes the same way.
        let needle: String = text.bytes().map(char::from).collect();
        self.session
            .exp_string(&needle)
            .unwrap_or_else(|err| panic!("`warren {}` never printed {text:?}: {err}", self.args))
    }

    /// Types a line.
    pub fn send_line(&mut self, line: &str) {
        self.session.send_line(line).expect("type a line");
    }

    /// Presses Ctrl-C.
    pub fn ctrl_c(&mut self) {
        self.session.send_control('c').expect("Ctrl-C");
    }

    /// Waits for the command to exit and returns its exit code.
    pub fn exit_code(&mut self) -> i32 {
        self.session
            .exp_eof()
            .unwrap_or_else(|err| panic!("`warren {}` did not end: {err}", self.args));
        match self.session.process().wait().expect("wait") {
            rexpect::process::WaitStatus::Exited(_, code) => code,
            other => panic!("`warren {}` ended with {other:?}", self.args),
        }
    }
}
