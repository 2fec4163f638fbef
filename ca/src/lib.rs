//! mailid-ca: the certificate authority of the mailid contract (SPEC §5).
//!
//! A request flows top to bottom through modules with one job each:
//!
//! * [`api`], [`enroll`]: HTTP routing, decoding and problem documents;
//! * [`authority`]: the registration authority's decisions (rate limits,
//!   route and compromised-key checks, TOTP, issue, supersede, revocation)
//!   for the HTTP handlers and the operator CLI alike; [`state`] is what
//!   they share;
//! * [`policy`]: CSR checks (parse, proof of possession, key policy, address);
//! * [`mta_client`]: the HMAC-signed TOTP check with the account's MTA;
//! * [`issuer`]: certificate building and signing through [`signer`] (the
//!   CA key, in a file or a PKCS#11 token, behind the pre-sign gate);
//!   [`crl`]: signed CRLs;
//!   [`publisher`]: when CRLs are signed, and which one replicas serve;
//! * [`store`]: certificates, the one-identity rule, MTA routes, CRL state,
//!   on SQLite or PostgreSQL.
//!
//! [`lint`] checks every certificate and CRL before the CA key signs it.
//!
//! [`config`], [`keys`], [`metrics`] hold what they are named for (the rate
//! limiter is [`mailid_shared::ratelimit`]); [`cli`], [`init`], [`ops`] and [`serve`]
//! are the operator side.

pub mod api;
pub mod authority;
pub mod cli;
pub mod config;
pub mod crl;
pub mod crl_der;
pub mod enroll;
pub mod init;
pub mod issuer;
pub mod keys;
pub mod lint;
pub mod metrics;
pub mod migrate;
pub mod mta_client;
pub mod ops;
pub mod policy;
pub mod publisher;
pub mod serve;
pub mod signer;
pub mod state;
pub mod store;
