//! End-to-end tests of the `cwdiag` binary: real sockets, fixtures, and
//! the JSON contract. One integration binary, as ripgrep and bottom do.

mod bad_input;
mod clients;
mod deploy;
mod fdlimit;
mod hardening;
mod identity;
mod live;
mod namespaces;
mod netns;
mod peers;
mod prometheus;
mod promserver;
mod readme;
mod realworld;
mod replay;
mod schema;
mod serve;
mod support;
mod sysctls;
mod trace;
mod ux;
