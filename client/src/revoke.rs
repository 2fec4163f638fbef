//! `mailid revoke`: the holder revokes one of their certificates with a
//! TOTP code bound to its key.

use std::path::PathBuf;

use mailid_shared::protocol::RevocationReason;
use mailid_shared::{Address, KeyId, Serial};
use serde::Serialize;

use crate::api;
use crate::enroll::parse_address;
use crate::error::{Error, Result, Service};
use crate::store::Store;
use crate::transport::{Credentials, Endpoint, Http, TlsOptions};

/// Everything `revoke` needs.
#[derive(Debug, Clone)]
pub struct RevokeOptions {
    pub address: String,
    pub mta_url: String,
    pub ca_url: String,
    /// Serial number text (hex; `:` and `0x` allowed).
    pub serial: String,
    /// Reason to give; the CA's default when `None`.
    pub reason: Option<RevocationReason>,
    pub credentials: Credentials,
    /// Store to take the key ID from and to update; `None` asks the CA.
    pub store_dir: Option<PathBuf>,
    pub tls: TlsOptions,
}

/// The result of a revocation.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    pub account: Address,
    pub serial: Serial,
    pub key_id: KeyId,
    pub revoked_at: String,
    pub reason: RevocationReason,
    /// Whether the store held the certificate and now marks it revoked.
    pub in_store: bool,
}

/// Revokes a certificate of the account at the CA.
pub async fn revoke(opts: &RevokeOptions) -> Result<Revoked> {
    let account = parse_address(&opts.address)?;
    let serial: Serial = opts
        .serial
        .parse()
        .map_err(|e| Error::Invalid(format!("'{}' is not a serial number: {e}", opts.serial)))?;
    let mta = Endpoint::parse(Service::Mta, &opts.mta_url)?;
    let ca = Endpoint::parse(Service::Ca, &opts.ca_url)?;
    let http = Http::new(&opts.tls)?;
    let store = opts.store_dir.as_deref().map(Store::open).transpose()?;

    let stored_key = match &store {
        Some(s) => s
            .account(&account)?
            .identities
            .into_iter()
            .find(|i| i.serial == serial)
            .map(|i| i.key_id),
        None => None,
    };
    let key_id = match stored_key {
        Some(k) => k,
        None => {
            let info = api::certificate_info(&http, &ca, &serial).await?;
            if info.account != account {
                return Err(Error::Invalid(format!(
                    "serial {serial} at the CA belongs to {}, not {account}",
                    info.account
                )));
            }
            info.key_id
        }
    };
    let code = api::request_totp(&http, &mta, &account, &opts.credentials, &key_id).await?;
    let resp = api::revoke(&http, &ca, &serial, &code.totp, opts.reason).await?;
    let in_store = match &store {
        Some(s) => s.mark_revoked(&account, &serial, resp.reason, &resp.revoked_at)?,
        None => false,
    };
    Ok(Revoked {
        account,
        serial,
        key_id,
        revoked_at: resp.revoked_at,
        reason: resp.reason,
        in_store,
    })
}
