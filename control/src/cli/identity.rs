//! `login`, `logout`, `whoami`, `user`, `token`, `audit` and `log-level`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::client::Client;
use super::commands::{Printer, seg, text};
use super::config::CliConfig;
use super::table::Table;
use super::{AuditCommand, OutputFormat, TokenCommand, UserCommand};

/// Reads a password: without echo from a terminal, or one line from piped stdin.
fn read_password(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let line = if !from_stdin && stdin.is_terminal() {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        let restored = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        eprintln!();
        read.context("reading the password")?;
        restored.context("turning echo back on")?;
        line
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line
    };
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(password)
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// What `windflow login` was given.
pub struct Login {
    pub user: Option<String>,
    pub password_stdin: bool,
    pub ttl: String,
    pub ca_fingerprint: Option<String>,
}

pub async fn login(client: Client, out: Printer, login: Login) -> anyhow::Result<ExitCode> {
    let Login {
        user,
        password_stdin,
        ttl,
        ca_fingerprint,
    } = login;
    // Trust is settled before a password is asked for, and never sent untrusted.
    let pinned =
        super::trust::ensure_trusted(&client, ca_fingerprint.as_deref(), password_stdin).await?;
    let (client, pinned_path) = match pinned {
        Some(p) => (p.client, Some(p.path)),
        None => (client, None),
    };
    let user = match user {
        Some(u) => u,
        None if password_stdin => bail!("--password-stdin needs --user"),
        None => ask("User: ")?,
    };
    let password = read_password("Password: ", password_stdin)?;
    let body = json!({ "user": user, "password": password, "ttl": ttl });
    let session: Value = client.post("/v1/login", Some(&body)).await?;
    let mut config = CliConfig::load_default()?;
    config.token = Some(text(&session["token"]));
    if config.address.is_none() {
        config.address = Some(client.address());
    }
    if pinned_path.is_some() {
        config.ca_cert = pinned_path;
    }
    let path = config.save_default()?;
    match out.0 {
        OutputFormat::Json => {
            let mut shown = session.clone();
            shown["token"] = json!("(saved)");
            out.json(&shown)?;
        }
        OutputFormat::Table => println!(
            "Logged in as {} ({}) until {}; token saved in {}",
            text(&session["user"]),
            text(&session["role"]),
            text(&session["expires_at"]),
            path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logout(client: &Client) -> anyhow::Result<ExitCode> {
    let revoked: Value = client.post("/v1/logout", None).await?;
    let mut config = CliConfig::load_default()?;
    config.token = None;
    config.save_default()?;
    println!("Logged out; token {} revoked", text(&revoked["id"]));
    Ok(ExitCode::SUCCESS)
}

pub async fn whoami(client: &Client, out: Printer) -> anyhow::Result<ExitCode> {
    let me: Value = client.get("/v1/whoami").await?;
    match out.0 {
        OutputFormat::Json => out.json(&me)?,
        OutputFormat::Table => println!(
            "{} ({} in {}), token {} `{}`",
            text(&me["user"]),
            text(&me["role"]),
            me["namespace"].as_str().unwrap_or("the whole cluster"),
            text(&me["token"]),
            text(&me["token_name"])
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_users(out: Printer, users: &[Value]) -> anyhow::Result<()> {
    if out.0 == OutputFormat::Json {
        return out.json(users);
    }
    let mut t = Table::new(vec![
        "ID",
        "NAME",
        "ROLE",
        "NAMESPACE",
        "CREATED",
        "PASSWORD CHANGED",
    ]);
    for u in users {
        t.row(vec![
            text(&u["id"]),
            text(&u["name"]),
            text(&u["role"]),
            text(&u["namespace"]),
            text(&u["created_at"]),
            text(&u["password_changed_at"]),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub async fn user(client: &Client, out: Printer, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let users: Vec<Value> = match cmd {
        UserCommand::Create {
            name,
            role,
            password_stdin,
        } => {
            let password = read_password(&format!("Password for {name}: "), password_stdin)?;
            let body = json!({
                "name": name,
                "role": role,
                "password": password,
                "namespace": client.namespace(),
            });
            vec![client.post("/v1/users", Some(&body)).await?]
        }
        UserCommand::List => client.get("/v1/users").await?,
        UserCommand::Show { name } => vec![client.get(&format!("/v1/users/{}", seg(&name))).await?],
        UserCommand::Delete { name } => {
            vec![client.delete(&format!("/v1/users/{}", seg(&name))).await?]
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(&format!("New password for {name}: "), password_stdin)?;
            let body = json!({ "password": password });
            vec![
                client
                    .put(&format!("/v1/users/{}/password", seg(&name)), &body)
                    .await?,
            ]
        }
    };
    print_users(out, &users)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn token(client: &Client, out: Printer, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let tokens: Vec<Value> = match cmd {
        TokenCommand::Create {
            name,
            expires,
            role,
        } => {
            let body = json!({
                "name": name,
                "expires": expires,
                "role": role,
                "namespace": client.namespace(),
            });
            let created: Value = client.post("/v1/tokens", Some(&body)).await?;
            return show_secret(out, &created, "created");
        }
        TokenCommand::Rotate { token } => {
            let rotated: Value = client
                .post(&format!("/v1/tokens/{}/rotate", seg(&token)), None)
                .await?;
            return show_secret(out, &rotated, "rotated");
        }
        TokenCommand::List => client.get("/v1/tokens").await?,
        TokenCommand::Revoke { token } => {
            vec![
                client
                    .delete(&format!("/v1/tokens/{}", seg(&token)))
                    .await?,
            ]
        }
    };
    if out.0 == OutputFormat::Json {
        out.json(&tokens)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec![
        "ID",
        "NAME",
        "KIND",
        "ROLE",
        "NAMESPACE",
        "USER",
        "PREFIX",
        "CREATED",
        "EXPIRES",
        "REVOKED",
    ]);
    for tk in &tokens {
        t.row(vec![
            text(&tk["id"]),
            text(&tk["name"]),
            text(&tk["kind"]),
            text(&tk["role"]),
            text(&tk["namespace"]),
            text(&tk["user"]),
            format!("{}…", text(&tk["prefix"])),
            text(&tk["created_at"]),
            text(&tk["expires_at"]),
            text(&tk["revoked_at"]),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

fn show_secret(out: Printer, token: &Value, what: &str) -> anyhow::Result<ExitCode> {
    match out.0 {
        OutputFormat::Json => out.json(token)?,
        OutputFormat::Table => println!(
            "Token {} `{}` {what} ({}, expires {}). Its secret, shown once:\n  {}",
            text(&token["id"]),
            text(&token["name"]),
            text(&token["role"]),
            text(&token["expires_at"]),
            text(&token["token"])
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(client: &Client, out: Printer, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::List {
        since,
        user,
        action,
        outcome,
        limit,
    } = cmd;
    let mut query = vec![format!("limit={limit}")];
    for (k, v) in [
        ("since", since),
        ("user", user),
        ("action", action),
        ("outcome", outcome),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", seg(&v)));
        }
    }
    let entries: Vec<Value> = client
        .get(&format!("/v1/audit?{}", query.join("&")))
        .await?;
    if out.0 == OutputFormat::Json {
        out.json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec![
        "ID", "TIME", "USER", "TOKEN", "SOURCE", "ACTION", "RESOURCE", "OUTCOME", "STATUS",
    ]);
    for e in &entries {
        t.row(vec![
            text(&e["id"]),
            text(&e["at"]),
            text(&e["user"]),
            text(&e["token"]),
            text(&e["source"]),
            text(&e["action"]),
            text(&e["resource"]),
            text(&e["outcome"]),
            text(&e["status"]),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

pub async fn log_level(
    client: &Client,
    out: Printer,
    level: Option<String>,
) -> anyhow::Result<ExitCode> {
    let answer: Value = match level {
        Some(level) => {
            client
                .put("/v1/agent/log-level", &json!({ "level": level }))
                .await?
        }
        None => client.get("/v1/agent/log-level").await?,
    };
    match out.0 {
        OutputFormat::Json => out.json(&answer)?,
        OutputFormat::Table => println!("log level: {}", text(&answer["level"])),
    }
    Ok(ExitCode::SUCCESS)
}
