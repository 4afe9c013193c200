//! Logging through `tracing`: the console, plus daily-rotated files under `DATA_DIR/logs`
//! for servers.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How much the console says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Silent,
    Normal,
    Debug,
}

impl Verbosity {
    pub fn from_flags(debug: bool, silent: bool) -> Self {
        match (debug, silent) {
            (true, _) => Verbosity::Debug,
            (false, true) => Verbosity::Silent,
            _ => Verbosity::Normal,
        }
    }

    fn directive(&self) -> &'static str {
        match self {
            Verbosity::Silent => "error",
            Verbosity::Normal => "info,quinn=warn,openraft=warn,sled=warn",
            Verbosity::Debug => "debug,quinn=info,openraft=info,sled=info,hyper=info,h2=info",
        }
    }
}

/// A console log level that can be set at run time (`windflow log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    const ALL: [Level; 4] = [Level::Debug, Level::Info, Level::Warn, Level::Error];

    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn directive(&self) -> String {
        // Dependencies stay a step quieter than our own crates, as at start-up.
        match self {
            Level::Debug => Verbosity::Debug.directive().into(),
            Level::Info => Verbosity::Normal.directive().into(),
            Level::Warn => "warn".into(),
            Level::Error => "error".into(),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a level (debug, info, warn or error)"))
    }
}

/// The console filter's handle, set by [`init`].
static CONSOLE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static CURRENT: Mutex<Option<Level>> = Mutex::new(None);

/// The level last set with [`set_level`] (or at start-up from the flags); `None` when
/// `RUST_LOG` set the filter.
pub fn current_level() -> Option<Level> {
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Changes the console's level now. Log files keep their debug detail.
pub fn set_level(level: Level) -> Result<(), String> {
    let handle = CONSOLE
        .get()
        .ok_or("logging was not set up by this process")?;
    handle
        .reload(EnvFilter::new(level.directive()))
        .map_err(|e| format!("changing the log level: {e}"))?;
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(level);
    Ok(())
}

/// Installs the global subscriber. `RUST_LOG` overrides the console level. Keep the
/// returned guard alive for as long as logs should reach the file.
pub fn init(verbosity: Verbosity, log_dir: Option<&Path>) -> Option<WorkerGuard> {
    let console_filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => {
            *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(match verbosity {
                Verbosity::Silent => Level::Error,
                Verbosity::Normal => Level::Info,
                Verbosity::Debug => Level::Debug,
            });
            EnvFilter::new(verbosity.directive())
        }
    };
    let (console_filter, handle) = reload::Layer::new(console_filter);
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(console_filter);
    let (file, guard) = match log_dir {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "windflow.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(EnvFilter::new(Verbosity::Debug.directive()));
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    // A second init (tests starting several servers in one process) is not an error.
    if tracing_subscriber::registry()
        .with(console)
        .with(file)
        .try_init()
        .is_ok()
    {
        let _ = CONSOLE.set(handle);
    }
    guard
}

use tracing_subscriber::Layer as _;
