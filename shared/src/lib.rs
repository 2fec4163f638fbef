//! mailid-shared: what the mailid services and client have in common.
//!
//! * [`keyid`]: strong key identifiers; [`address`]: plain and strong mail
//!   addresses; [`serial`]: serial numbers — the newtypes the protocol uses.
//! * [`protocol`]: request and answer bodies of both services.
//! * [`problem`]: RFC 9457 problem documents with the contract's codes.
//! * [`pem`]: tolerant PEM decoding and encoding.
//! * [`sigverify`]: signature checks and canonical SPKIs.
//! * [`pbes2`]: PKCS#8 key encryption (PBES2, AES-256), one way for all.
//! * [`timefmt`]: RFC 3339 UTC times; [`input`]: bounded CLI input;
//!   [`cli`]: the SPEC §3 usage errors of all three binaries.
//!
//! The client builds the crate without features. The `server` feature adds
//! what only the services compile, and with it SQLite, axum, hyper's server,
//! tower and rustls's server side:
//!
//! * `authsig`: the HMAC-signed CA → MTA requests.
//! * `db`: SQLite with migrations, WAL and group commit.
//! * `http`, `wire`, `metrics`: serving, hyper's own error answers as
//!   problem documents, Prometheus text.
//! * `ratelimit`: token buckets keyed by client IP or account.
//! * `files`: durable replacement of the services' small state files.
//! * the axum side of [`problem`]: `IntoResponse`, `ApiJson` and the
//!   middleware that makes every error answer a problem document.

pub mod address;
#[cfg(feature = "server")]
pub mod authsig;
pub mod cli;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod files;
#[cfg(feature = "server")]
pub mod http;
pub mod input;
pub mod keyid;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod metrics;
pub mod pbes2;
pub mod pem;
#[cfg(feature = "server")]
pub mod pg;
pub mod problem;
pub mod protocol;
#[cfg(feature = "server")]
pub mod ratelimit;
pub mod serial;
pub mod sigverify;
pub mod timefmt;
pub mod translog;
#[cfg(feature = "server")]
pub mod wire;

pub use address::{Address, AddressError, StrongAddress, StrongForm};
pub use keyid::{KeyId, KeyIdError};
#[cfg(feature = "server")]
pub use problem::ApiJson;
pub use problem::{ErrorCode, Problem, ProblemDocument};
pub use serial::Serial;
