//! mailid-shared: what the mailid services and client have in common.
//!
//! * [`keyid`]: strong key identifiers; [`address`]: plain and strong mail
//!   addresses; [`serial`]: serial numbers — the newtypes the protocol uses.
//! * [`protocol`]: request and answer bodies of both services.
//! * [`problem`]: RFC 9457 problem documents with the contract's codes.
//! * [`pem`]: tolerant PEM decoding and encoding.
//! * [`authsig`]: the HMAC-signed CA → MTA requests.
//! * [`db`]: SQLite with migrations, WAL and group commit.
//! * [`http`], [`metrics`]: serving and Prometheus text.
//! * [`ratelimit`]: token buckets keyed by client IP or account.
//! * [`timefmt`]: RFC 3339 UTC times; [`input`]: bounded CLI input.

pub mod address;
pub mod authsig;
pub mod cli;
pub mod db;
pub mod files;
pub mod http;
pub mod input;
pub mod keyid;
pub mod metrics;
pub mod pem;
pub mod problem;
pub mod protocol;
pub mod ratelimit;
pub mod serial;
pub mod sigverify;
pub mod timefmt;
pub mod wire;

pub use address::{Address, AddressError, StrongAddress, StrongForm};
pub use keyid::{KeyId, KeyIdError};
pub use problem::{ApiJson, ErrorCode, Problem, ProblemDocument};
pub use serial::Serial;
