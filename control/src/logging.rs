//! Logging through `tracing`: the console, plus daily-rotated files under `DATA_DIR/logs`
//! for servers.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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

/// Installs the global subscriber. `RUST_LOG` overrides the console level. Keep the
/// returned guard alive for as long as logs should reach the file.
pub fn init(verbosity: Verbosity, log_dir: Option<&Path>) -> Option<WorkerGuard> {
    let console_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(verbosity.directive()));
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
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file)
        .try_init();
    guard
}

use tracing_subscriber::Layer as _;
