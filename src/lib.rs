//! cwdiag as a library: the collectors, the pure classifier and the
//! renderers behind the `cwdiag` binary. The binary's `main` only parses
//! arguments and maps errors to exit codes.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod cli;
pub mod collect;
pub mod diag;
pub mod escape;
pub mod events;
pub mod filter;
pub mod killplan;
pub mod model;
pub mod outfile;
pub mod output;
pub mod procname;
pub mod report;
pub mod serve;
#[cfg(test)]
mod testutil;
pub mod units;
