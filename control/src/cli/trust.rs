//! Trusting a cluster's HTTPS API on first contact: `windflow login` against a server whose
//! certificate is not trusted yet fetches the cluster CA, shows its fingerprint (or compares
//! it with `--ca-fingerprint`), and once accepted keeps it next to the config file.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::client::{Client, Untrusted};
use super::config::CliConfig;

/// A CA accepted at this login: the client that trusts it, and where it was stored.
pub struct Pinned {
    pub client: Client,
    pub path: PathBuf,
}

/// Where `windflow login` keeps the CA it was asked to trust: next to the config file.
pub fn pinned_ca_path() -> anyhow::Result<PathBuf> {
    Ok(CliConfig::default_path()?.with_file_name("ca.crt"))
}

/// A fingerprint as people write it: hex, any case, with or without `:` and spaces.
fn normalize_fingerprint(text: &str) -> anyhow::Result<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--ca-fingerprint: expected a SHA-256 fingerprint (64 hex digits), not `{text}`");
    }
    Ok(hex)
}

/// Makes sure `client` trusts its server before a password is sent: if the server's
/// certificate is not trusted, the cluster CA is fetched, checked against `fingerprint` or
/// by the person at the terminal, stored, and a client trusting it is returned. `None`:
/// the connection was trusted already.
pub async fn ensure_trusted(
    client: &Client,
    fingerprint: Option<&str>,
    stdin_is_for_password: bool,
) -> anyhow::Result<Option<Pinned>> {
    let expected = fingerprint.map(normalize_fingerprint).transpose()?;
    let untrusted = match client.probe().await {
        Ok(()) => {
            if expected.is_some() && client.is_plain_http() {
                eprintln!("warning: --ca-fingerprint is not used: the server is plain HTTP");
            }
            return Ok(None);
        }
        Err(e) => match e.downcast::<Untrusted>() {
            Ok(untrusted) => untrusted,
            Err(other) => return Err(other),
        },
    };
    let fetched = Client::fetch_ca_unverified(&untrusted.url).await?;
    match expected {
        Some(want) if want == fetched.fingerprint => {}
        Some(want) => bail!(
            "the cluster CA served by {} has the SHA-256 fingerprint {}, not {want} as \
             --ca-fingerprint says; not trusting it (someone may be in the way)",
            untrusted.url,
            fetched.fingerprint
        ),
        None => {
            let stdin = std::io::stdin();
            if stdin_is_for_password || !stdin.is_terminal() {
                bail!(
                    "{untrusted}\nThe server serves a cluster CA with SHA-256 fingerprint {}; \
                     if that is your cluster's, log in with --ca-fingerprint {}",
                    fetched.fingerprint,
                    fetched.fingerprint
                );
            }
            eprintln!(
                "The HTTPS certificate of {} is not trusted yet ({}).\n\
                 It serves a cluster CA with SHA-256 fingerprint:\n  {}\n\
                 Check it against the one `windflow ca init` or the server printed.",
                untrusted.url, untrusted.reason, fetched.fingerprint
            );
            eprint!("Trust this CA for this cluster? [y/N] ");
            std::io::stderr().flush()?;
            let mut answer = String::new();
            stdin.lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                bail!("the cluster CA was not trusted; nothing was stored");
            }
        }
    }
    // The server must prove it holds a certificate of that CA before anything is stored.
    let trusting = client.trusting(&fetched.pem)?;
    trusting.probe().await.with_context(|| {
        format!(
            "{} does not present a certificate of the CA it serves",
            untrusted.url
        )
    })?;
    let path = pinned_ca_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, &fetched.pem).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "Trusting the cluster CA {} (stored in {})",
        fetched.fingerprint,
        path.display()
    );
    Ok(Some(Pinned {
        client: trusting,
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_as_people_write_them() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons).unwrap(), hex);
        assert_eq!(normalize_fingerprint(&format!(" {hex} ")).unwrap(), hex);
        let err = normalize_fingerprint("abcd").unwrap_err().to_string();
        assert!(err.contains("--ca-fingerprint"), "{err}");
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }
}
