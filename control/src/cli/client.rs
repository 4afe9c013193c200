//! The CLI's HTTP client: bearer token, JSON, the API's error shape, and failover across
//! the configured servers.

use anyhow::{Context as _, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    /// Sent as `?namespace=` on every request (the server ignores it on cluster-wide
    /// routes).
    namespace: Option<String>,
}

impl Client {
    pub fn new(urls: Vec<String>, token: Option<String>) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!(
                "no server address: set WINDFLOW_ADDR, --addr, or `address` in ~/.windflow/config"
            );
        }
        windflow_certs::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(90))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            urls,
            token,
            namespace: None,
        })
    }

    /// Works in `namespace` from now on (`None`: the token's, or the server's default).
    pub fn in_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// The namespace this client works in, if one was named.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, body).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// The servers this client talks to, as an address setting.
    pub fn address(&self) -> String {
        self.urls.join(",")
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::DELETE, path, None).await
    }

    /// A `GET` whose answer is a file, not JSON.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let res = self.send(Method::GET, path, Body::None).await?;
        let status = res.status();
        let bytes = res.bytes().await.context("reading the response")?;
        if !status.is_success() {
            bail!("{} (HTTP {})", error_message(&bytes), status.as_u16());
        }
        Ok(bytes.to_vec())
    }

    /// A `POST` of a file, answered with JSON.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        decode(self.send(Method::POST, path, Body::Bytes(body)).await?).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let body = body.map_or(Body::None, Body::Json);
        decode(self.send(method, path, body).await?).await
    }

    /// Sends a request to the first server that can be reached.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> anyhow::Result<reqwest::Response> {
        let path = match &self.namespace {
            Some(ns) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}namespace={}", super::commands::seg(ns))
            }
            None => path.to_owned(),
        };
        let mut last_err = None;
        for url in &self.urls {
            let mut req = self.http.request(method.clone(), format!("{url}{path}"));
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            req = match &body {
                Body::None => req,
                Body::Json(v) => req.json(v),
                Body::Bytes(b) => req.body(b.clone()),
            };
            match req.send().await {
                Ok(res) => return Ok(res),
                // Only a server we could not reach is worth trying the next one for.
                Err(e) if e.is_connect() => {
                    last_err = Some(anyhow!(e).context(format!("cannot reach {url}")))
                }
                Err(e) => return Err(anyhow!(e).context(format!("request to {url} failed"))),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no server to ask")))
    }
}

async fn decode<T: DeserializeOwned>(res: reqwest::Response) -> anyhow::Result<T> {
    let status = res.status();
    let bytes = res.bytes().await.context("reading the response")?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .context("the server's answer is not the expected JSON");
    }
    let message = error_message(&bytes);
    if status == StatusCode::UNAUTHORIZED {
        bail!("{message} (set WINDFLOW_TOKEN, --token, or `token` in ~/.windflow/config)");
    }
    bail!("{message} (HTTP {})", status.as_u16())
}

/// What a request carries.
enum Body<'a> {
    None,
    Json(&'a Value),
    Bytes(Vec<u8>),
}

/// The message of an API error body, or the body itself.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}
