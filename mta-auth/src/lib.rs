//! mailid-mta-auth: the MTA auth service of SPEC §4.
//!
//! A request flows through [`api`] (HTTP, problem documents), [`authz`]
//! (who is calling), [`identity`] (upload checks, CRLs) and [`validate`]
//! (issuing and validating codes with the pure [`totp`] / [`lockout`]
//! logic) or [`backup`] (key backups, SPEC §10), down to [`store`] (SQLite
//! or PostgreSQL); [`idlog`] keeps the identity log (SPEC §11) and signs its
//! checkpoints. [`cli`] is the operator command
//! line, [`server`] starts the service (with [`client_crl`] for TLS client
//! certificates).

pub mod api;
pub mod authz;
pub mod backup;
pub mod cli;
pub mod client_crl;
pub mod config;
pub mod identity;
pub mod idlog;
pub mod lockout;
pub mod logverify;
pub mod metrics;
pub mod server;
pub mod store;
pub mod totp;
pub mod validate;

pub use config::Config;
pub use server::{start, Running, ServeOptions, TlsFiles};
