//! A cookie-keeping HTTP client for the web console: what a browser does with its forms,
//! without running one. Redirects are not followed, so tests see every `Set-Cookie` and
//! `Location`.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::collections::BTreeMap;

pub struct Visitor {
    base: String,
    http: reqwest::Client,
    /// Cookie name to value, as the server last set them.
    pub cookies: BTreeMap<String, String>,
    /// Sent as `Origin` on posts (a browser always sends one on a form post).
    pub origin: String,
}

/// One console answer.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect points.
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The `Set-Cookie` header that sets `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let at = self.body.find(marker).unwrap_or_else(|| panic!("no csrf field in:\n{}", self.body)) + marker.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body:\n{}", self.body);
        self
    }

    pub fn expect_redirect(&self, to: &str) -> &Self {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "expected a redirect; body:\n{}", self.body);
        assert_eq!(self.location(), to);
        self
    }

    pub fn contains(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

impl Visitor {
    pub fn new(base: &str) -> Visitor {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Visitor { base: base.to_owned(), http, cookies: BTreeMap::new(), origin: base.to_owned() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() { request } else { request.header("cookie", self.cookie_header()) };
        let response = request.send().await.expect("the console answers");
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or("");
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let expired = set.contains("Max-Age=0");
            if expired || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap_or_default();
        Page { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts a form as a browser would from a console page.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = form_body(fields);
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", self.origin.clone())
            .body(body);
        self.send(request).await
    }

    /// Posts a `multipart/form-data` form with text fields and one file, as a browser does
    /// for a file input.
    pub async fn post_file(&mut self, path: &str, fields: &[(&str, &str)], file: (&str, &str, Vec<u8>)) -> Page {
        let boundary = "keel-test-boundary-7d2f1c";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        let (name, filename, bytes) = file;
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\ncontent-type: application/wasm\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .header("origin", self.origin.clone())
            .body(body);
        self.send(request).await
    }

    /// Signs in through the form; panics unless it works.
    pub async fn sign_in(&mut self, tenant: &str, username: &str, password: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        form.expect(200);
        let csrf = form.csrf();
        let page = self
            .post(
                "/console/sign-in",
                &[("csrf", &csrf), ("tenant", tenant), ("username", username), ("password", password)],
            )
            .await;
        page.expect_redirect("/console/");
        page
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
