//! `task-agent`: the entrypoint of every task pod. See README.md and docs/agent.md for what it does and why.

pub mod artifacts;
pub mod azure;
pub mod cli;
pub mod commands;
pub mod conceal;
pub mod error;
pub mod identity;
pub mod install;
pub mod logging;
pub mod mask;
pub mod report;
pub mod run;
pub mod secrets;
pub mod snapshot;
pub mod supervise;
pub mod telemetry;
pub mod units;
pub mod usage;
pub mod verdict;
