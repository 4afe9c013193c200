//! The CLI's HTTP client: bearer token, JSON, the API's error shape, failover across
//! the configured servers, and HTTPS trust: a CA given with `--ca-cert` (or pinned at
//! login) is the only one trusted; without one, the system's roots are.

use std::path::Path;
use std::time::Duration;

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

/// The server's HTTPS certificate does not chain to a CA this client trusts.
#[derive(Debug, thiserror::Error)]
#[error(
    "the HTTPS certificate of {url} is not trusted ({reason}); pass the cluster CA with \
     --ca-cert FILE (or WINDFLOW_CA_CERT), or run `windflow login`, which fetches it and \
     shows its fingerprint to check"
)]
pub struct Untrusted {
    pub url: String,
    pub reason: String,
}

fn builder() -> reqwest::ClientBuilder {
    windflow_certs::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(90))
}

impl Client {
    /// A client for `urls`; with `ca_cert`, HTTPS servers are trusted only if their
    /// certificate chains to that CA (PEM).
    pub fn new(
        urls: Vec<String>,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let ca = match ca_cert {
            Some(path) => Some((
                std::fs::read(path)
                    .with_context(|| format!("--ca-cert: reading {}", path.display()))?,
                format!("--ca-cert: {}", path.display()),
            )),
            None => None,
        };
        Self::build(urls, token, ca)
    }

    /// This client's servers and token, trusting only the CA in `pem` from now on.
    pub fn trusting(&self, pem: &str) -> anyhow::Result<Self> {
        let ca = (pem.as_bytes().to_vec(), "the cluster CA".to_owned());
        Ok(
            Self::build(self.urls.clone(), self.token.clone(), Some(ca))?
                .in_namespace(self.namespace.clone()),
        )
    }

    fn build(
        urls: Vec<String>,
        token: Option<String>,
        ca: Option<(Vec<u8>, String)>,
    ) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!(
                "no server address: set WINDFLOW_ADDR, --addr, or `address` in ~/.windflow/config"
            );
        }
        let mut builder = builder();
        if let Some((pem, what)) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .with_context(|| format!("{what} holds no PEM certificate"))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("building the HTTP client")?;
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

    /// Whether the first server answers `/healthz` over a connection this client trusts.
    pub async fn probe(&self) -> anyhow::Result<()> {
        self.get_bytes("/healthz").await.map(drop)
    }

    /// Whether any configured server is reached over plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("http://"))
    }

    /// The cluster CA the server at `url` serves, fetched *without* checking its
    /// certificate (that is what is not trusted yet): the caller must check the
    /// fingerprint, which is computed here from the certificate, not taken from the
    /// server's word.
    pub async fn fetch_ca_unverified(url: &str) -> anyhow::Result<FetchedCa> {
        let http = builder()
            .danger_accept_invalid_certs(true)
            .build()
            .context("building the HTTP client")?;
        let res = http
            .get(format!("{url}/v1/cluster/ca"))
            .send()
            .await
            .with_context(|| format!("fetching the cluster CA from {url}"))?;
        let answer: Value = decode(res).await.context("fetching the cluster CA")?;
        let pem = answer["ca_pem"]
            .as_str()
            .context("the server's answer has no `ca_pem`")?
            .to_owned();
        let fingerprint = windflow_certs::pem_fingerprint_sha256(&pem)
            .context("the certificate the server sent as its CA")?;
        Ok(FetchedCa { pem, fingerprint })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None).await
    }

    /// A `GET` of a paged list: its items, and the cursor of the next page if there is one.
    pub async fn get_page<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<(Vec<T>, Option<String>)> {
        let res = self.send(Method::GET, path, Body::None).await?;
        let next = res
            .headers()
            .get("x-windflow-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((decode(res).await?, next))
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

    /// A `GET` whose body is read as it arrives (`alloc logs --follow`): no overall time
    /// limit, only the connect timeout. An error answer is read whole and returned.
    pub async fn get_streaming(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        // Long enough to be never, short enough for the timer to represent.
        const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        let res = self
            .send_timed(Method::GET, path, Body::None, Some(FOREVER))
            .await?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let bytes = res.bytes().await.context("reading the response")?;
        bail!("{} (HTTP {})", error_message(&bytes), status.as_u16())
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
        self.send_timed(method, path, body, None).await
    }

    /// [`Client::send`] with its own overall timeout instead of the client's.
    async fn send_timed(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        timeout: Option<Duration>,
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
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            req = match &body {
                Body::None => req,
                Body::Json(v) => req.json(v),
                Body::Bytes(b) => req.body(b.clone()),
            };
            match req.send().await {
                Ok(res) => return Ok(res),
                // Another server of the same cluster would present the same CA.
                Err(e) if untrusted_reason(&e).is_some() => {
                    let reason = untrusted_reason(&e).unwrap_or_default();
                    return Err(Untrusted {
                        url: url.clone(),
                        reason,
                    }
                    .into());
                }
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

/// A CA certificate as a server served it, and the fingerprint computed here.
pub struct FetchedCa {
    pub pem: String,
    pub fingerprint: String,
}

/// Why rustls refused the server's certificate, if that is why `e` failed. rustls's error
/// may sit inside `io::Error`s (nested), whose `source()` skips what they wrap, so those
/// are opened with `get_ref` too.
fn untrusted_reason(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let mut candidate = Some(err);
        while let Some(c) = candidate {
            if let Some(rustls::Error::InvalidCertificate(why)) = c.downcast_ref::<rustls::Error>()
            {
                return Some(format!("{why:?}"));
            }
            candidate = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
        }
        next = err.source();
    }
    None
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
