//! Schedules on the leader: cron expressions read in IANA time zones ([`expr`]), which
//! due times to fire now ([`plan`], driven by a [`clock::Clock`] so it is tested with a
//! controlled one), and the leader's loop that proposes each fire through raft
//! ([`runner`]). Apply refuses a due time not after the last recorded fire, so a leader
//! change neither skips nor doubles one.

pub mod clock;
pub mod expr;
pub mod plan;
pub mod runner;

pub use clock::{Clock, SystemClock};
pub use expr::{CronExpr, ExprError};
