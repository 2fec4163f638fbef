//! mailid-client: the account holder's side of mailid (SPEC §6), as a
//! library a mail client can embed; the `mailid` binary is a thin shell.
//!
//! * [`enroll()`]: steps 2–10 — key, CSR, TOTP, revocation at a previous
//!   CA, enrollment, key store, publication — reporting each [`Step`].
//! * [`revoke()`], [`lookup()`], [`key_id_of_file`]: the other commands.
//! * [`backup()`], [`recover()`]: keys kept at the MTA under a recovery
//!   key, and the store rebuilt from them on another device (SPEC §10).
//! * [`export::export_p12`]: an identity as a PKCS#12 file (SPEC §10).
//! * [`Store`]: the local key store; [`transport`]: HTTPS and errors.

pub mod api;
pub mod backup;
pub mod cert;
pub mod enroll;
pub mod error;
pub mod export;
pub mod keyfile;
pub mod keys;
pub mod logverify;
pub mod lookup;
pub mod recover;
pub mod recovery;
pub mod revoke;
pub mod secret;
pub mod store;
pub mod transport;

pub use backup::{backup, BackedUp, BackupOptions, Secret};
pub use enroll::{enroll, parse_address, publish, EnrollOptions, Outcome, Step};
pub use error::{Error, Result, Service};
pub use keyfile::{key_id_of_bytes, key_id_of_file, FileKeyId, FileKind};
pub use keys::{KeyType, NewKey};
pub use lookup::{lookup, Found};
pub use recover::{recover, RecoverOptions, RecoverWith, Recovered};
pub use revoke::{revoke, RevokeOptions, Revoked};
pub use store::{IdentityStatus, Store, StoredIdentity};
pub use transport::{ClientCert, Credentials, Endpoint, Http, TlsOptions};
