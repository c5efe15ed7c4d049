//! A small W3C WebDriver client: enough to drive a real headless Chromium through the
//! console (open pages, type, click, read the page, run a measurement script, take
//! screenshots). WebDriver is JSON over HTTP, so this is a few requests, not a dependency.
//!
//! [`Browser::start`] runs `chromedriver` on a free port. It fails loudly when Chromium or
//! its driver is missing (`scripts/browser-tools check` installs them).

use base64::Engine as _;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
}

/// An element on the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// A headless Chromium, `width` × `height` pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's chromium and chromium-driver (`scripts/browser-tools check` installs them as root)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await.ok();
            if let Some(reply) = ready
                && let Ok(body) = reply.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", format!("--window-size={width},{height}")],
            },
        } } });
        let created: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let id = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {created}"));
        Browser { driver, http, session: format!("{base}/session/{id}") }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|(error, message)| panic!("webdriver {path}: {error}: {message}"))
    }

    /// A command's value, or the driver's error and message (an element gone stale because
    /// the page moved on, say).
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("chromedriver answers").json().await.expect("JSON");
        if let Some(error) = answer["value"]["error"].as_str() {
            return Err((error.to_owned(), answer["value"]["message"].clone()));
        }
        Ok(answer["value"].clone())
    }

    pub async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or("").to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or("").to_owned()
    }

    /// The first element matching a CSS selector; panics if there is none.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let found = self.try_find(css).await;
        found.unwrap_or_else(|| panic!("no element matches {css}"))
    }

    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let body = json!({ "using": "css selector", "value": css });
        let answer: Value = self
            .http
            .post(format!("{}/element", self.session))
            .json(&body)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("JSON");
        let id = answer["value"][ELEMENT].as_str()?;
        Some(Element { browser: self, id: id.to_owned() })
    }

    /// Runs `script` in the page (a function body; `return` answers) and gives its result.
    pub async fn run(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap_or("")).expect("base64 PNG")
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }
}

impl Browser {
    /// Ends the browser session (its Chromium exits), then the driver.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

impl Element<'_> {
    fn path(&self, what: &str) -> String {
        format!("/element/{}/{what}", self.id)
    }

    pub async fn click(&self) {
        self.browser.call(reqwest::Method::POST, &self.path("click"), Some(json!({}))).await;
    }

    pub async fn clear(&self) {
        self.browser.call(reqwest::Method::POST, &self.path("clear"), Some(json!({}))).await;
    }

    pub async fn type_text(&self, text: &str) {
        self.browser.call(reqwest::Method::POST, &self.path("value"), Some(json!({ "text": text }))).await;
    }

    pub async fn text(&self) -> String {
        self.browser.call(reqwest::Method::GET, &self.path("text"), None).await.as_str().unwrap_or("").to_owned()
    }

    /// The element's text, or `None` when it is gone (the page navigated since it was found).
    pub async fn try_text(&self) -> Option<String> {
        let text = self.browser.try_call(reqwest::Method::GET, &self.path("text"), None).await.ok()?;
        Some(text.as_str().unwrap_or("").to_owned())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's Chromium goes with its driver's process group; ending the driver is
        // enough for a test process that is about to exit.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
