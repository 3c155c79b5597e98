//! End-to-end support for the web console: Debian's `chromedriver` driving a real headless
//! Chromium over WebDriver (fantoccini), pointed at the real `warren dev`, and the few things a
//! person does in it (sign in, open a page, wait to read something).

#![allow(dead_code)]

use crate::common::free_port;
use crate::edge_support::{Platform, code};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long the console may take to show what a test waits for.
pub const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// A `chromedriver` process (killed when dropped) that opens headless browsers.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver (deploy/test.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        warren_testkit::wait_until(Duration::from_secs(20), || async {
            reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        Self { child, url }
    }

    /// A new headless browser (its own profile) at phone or desktop size.
    pub async fn browser(&self, name: &str, width: u32, height: u32) -> Page {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session");
        Page {
            client,
            name: name.to_owned(),
        }
    }
}

fn chromedriver() -> &'static str {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromedriver")
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
}

/// One browser window and what a person does in it.
pub struct Page {
    pub client: Client,
    name: String,
}

impl Page {
    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The first element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(UI_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(err) => self.fail(&format!("no {css}: {err}")).await,
        }
    }

    /// Types `text` into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// The text of every element matching `css` (empty strings when none).
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);";
        let value = self
            .client
            .execute(script, vec![json!(css)])
            .await
            .expect("script");
        serde_json::from_value(value).unwrap_or_default()
    }

    /// Runs `script` in the page.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.expect("script")
    }

    /// Waits until `check` holds for the texts of `css`; returns them.
    pub async fn wait_texts(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let started = Instant::now();
        loop {
            let texts = self.texts(css).await;
            if check(&texts) {
                return texts;
            }
            if started.elapsed() > UI_TIMEOUT {
                self.fail(&format!("{css} never showed {what}; it shows {texts:?}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until some element matching `css` contains `text`; returns its text.
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        let texts = self
            .wait_texts(css, text, |texts| texts.iter().any(|t| t.contains(text)))
            .await;
        texts
            .into_iter()
            .find(|t| t.contains(text))
            .unwrap_or_default()
    }

    /// Waits until the address bar holds `part`; the address.
    pub async fn wait_url(&self, part: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.client.current_url().await.expect("url").to_string();
            if url.contains(part) {
                return url;
            }
            if started.elapsed() > UI_TIMEOUT {
                self.fail(&format!("the address never held {part}: {url}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot as `<target tmp>/console/<page>-<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{}-{name}.png", self.name));
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Saves a screenshot and fails the test with what the page shows.
    async fn fail(&self, problem: &str) -> ! {
        let shot = self.screenshot("failure").await;
        let body = self.texts("body").await.join("");
        let loaded = self
            .run(
                "return performance.getEntriesByType('resource').map(e => \
                 `${e.name} ${e.responseStatus} ${Math.round(e.duration)} ms`);",
                vec![],
            )
            .await;
        panic!(
            "{}: {problem}\npage text: {body}\nloaded: {loaded}\nscreenshot: {}",
            self.name,
            shot.display()
        );
    }

    /// Signs in as `email` through the console with the emailed 6-digit code.
    pub async fn sign_in_by_code(&self, platform: &Platform, email: &str) {
        self.sign_in_by_code_at(&platform.base, platform, email)
            .await;
    }

    /// [`Self::sign_in_by_code`] through the edge at `base`.
    pub async fn sign_in_by_code_at(&self, base: &str, platform: &Platform, email: &str) {
        self.open(base).await;
        let before = platform.smtp.mails_to(email).len();
        self.fill("#email", email).await;
        self.click("#send-link").await;
        self.wait_text("#check-mail", email).await;
        let mail = platform
            .smtp
            .wait_for_mail(email, before + 1, Duration::from_secs(10))
            .await;
        self.fill("#code", &code(&mail)).await;
        self.click("#verify-code").await;
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
