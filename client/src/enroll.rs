//! The set-up flow, steps 2–10: key, CSR, TOTP, revocation at a previous
//! CA, enrollment, storage and publication.
//!
//! Step 5 revokes the old identity only after the new CA's preflight
//! (`POST /v1/certificates/check`) said it would accept the CSR, so a CA
//! that refuses, or a wrong `--ca`, costs the account nothing; a failure
//! after step 5 says the old identity is gone and how to enroll again.

use std::fmt;
use std::path::PathBuf;

use mailid_shared::protocol::RevocationReason;
use mailid_shared::{pem, Address, KeyId, Serial};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::api;
use crate::cert::{self, CertSummary};
use crate::error::{Error, Result, Service};
use crate::keys::{KeyType, NewKey};
use crate::store::{NewIdentity, Store, StoredIdentity};
use crate::transport::{Credentials, Endpoint, Http, TlsOptions};

/// Everything `enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The account's address (checked by [`enroll`]).
    pub address: String,
    /// Base URL of the MTA auth service.
    pub mta_url: String,
    /// Base URL of the CA to enroll at.
    pub ca_url: String,
    /// How to authenticate to the MTA.
    pub credentials: Credentials,
    /// Key type to generate.
    pub key_type: KeyType,
    /// Key store directory.
    pub store_dir: PathBuf,
    /// Passphrase to encrypt the stored key with.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// TLS roots and client certificate.
    pub tls: TlsOptions,
}

impl EnrollOptions {
    /// Options with a P-256 key, no passphrase and system TLS roots.
    pub fn new(
        address: &str,
        mta_url: &str,
        ca_url: &str,
        credentials: Credentials,
        store_dir: PathBuf,
    ) -> Self {
        EnrollOptions {
            address: address.to_string(),
            mta_url: mta_url.to_string(),
            ca_url: ca_url.to_string(),
            credentials,
            key_type: KeyType::default(),
            store_dir,
            passphrase: None,
            tls: TlsOptions::default(),
        }
    }
}

/// What happened at one step; `Display` gives the line the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    KeyGenerated {
        key_type: KeyType,
        key_id: KeyId,
    },
    CsrBuilt {
        account: Address,
        key_id: KeyId,
    },
    TotpIssued {
        account: Address,
        key_id: KeyId,
        expires_at: String,
    },
    NoOtherCa,
    PreviousRevoked {
        serial: Serial,
        key_id: KeyId,
        ca_url: String,
        reason: RevocationReason,
        already: bool,
    },
    Sent {
        ca_url: String,
    },
    Checked,
    CaRevoked {
        serials: Vec<Serial>,
    },
    Issued {
        serial: Serial,
        key_id: KeyId,
        not_after: String,
    },
    Stored {
        serial: Serial,
        key_id: KeyId,
        dir: PathBuf,
    },
    Published {
        serial: Serial,
        key_id: KeyId,
        mta_url: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::KeyGenerated { key_type, key_id } => write!(
                f,
                "step 2: generated a {} key pair from the OS CSPRNG, key ID {key_id}",
                key_type.label()
            ),
            Step::CsrBuilt { account, key_id } => {
                write!(f, "step 3: built a CSR for {account}, key ID {key_id}")
            }
            Step::TotpIssued { account, key_id, expires_at } => write!(
                f,
                "step 4: MTA issued a TOTP code for {account} bound to key ID {key_id}, valid until {expires_at}"
            ),
            Step::NoOtherCa => write!(f, "step 5: no valid identity from another CA to revoke"),
            Step::PreviousRevoked {
                serial,
                key_id,
                ca_url,
                reason,
                already,
            } => write!(
                f,
                "step 5: {} serial {serial} (key ID {key_id}) at the previous CA {ca_url}, reason {reason}",
                if *already { "found already revoked:" } else { "revoked" }
            ),
            Step::Sent { ca_url } => write!(f, "step 6: sent the CSR and TOTP code to the CA at {ca_url}"),
            Step::Checked => write!(f, "step 7: CA checked the TOTP code with the MTA"),
            Step::CaRevoked { serials } if serials.is_empty() => {
                write!(f, "step 8: CA had no earlier valid identity to revoke")
            }
            Step::CaRevoked { serials } => {
                let list: Vec<&str> = serials.iter().map(Serial::as_str).collect();
                write!(f, "step 8: CA revoked serial {} (superseded)", list.join(", "))
            }
            Step::Issued { serial, key_id, not_after } => write!(
                f,
                "step 9: CA issued serial {serial} for key ID {key_id}, valid until {not_after}"
            ),
            Step::Stored { serial, key_id, dir } => write!(
                f,
                "step 10: stored key and certificate (serial {serial}, key ID {key_id}) in {}",
                dir.display()
            ),
            Step::Published { serial, key_id, mta_url } => write!(
                f,
                "step 10: MTA at {mta_url} publishes serial {serial}, key ID {key_id}"
            ),
        }
    }
}

/// The result of a successful enrollment.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub account: Address,
    pub serial: Serial,
    pub key_id: KeyId,
    pub key_type: String,
    pub not_before: String,
    pub not_after: String,
    pub ca: String,
    pub mta: String,
    /// Serials the CA revoked as superseded when issuing.
    pub revoked: Vec<Serial>,
    /// The identity revoked at a different CA first (step 5), if any.
    pub revoked_at_previous_ca: Option<Serial>,
    /// Directory of the stored key, certificate and chain.
    pub store: PathBuf,
    pub certificate: String,
    pub chain: String,
}

/// Parses an address given by the user.
pub fn parse_address(text: &str) -> Result<Address> {
    Address::parse(text.trim())
        .map_err(|e| Error::Invalid(format!("'{text}' is not a valid mail address: {e}")))
}

/// Runs steps 2–10, reporting each step to `progress`.
pub async fn enroll(opts: &EnrollOptions, progress: &mut dyn FnMut(&Step)) -> Result<Outcome> {
    let account = parse_address(&opts.address)?;
    let mta = Endpoint::parse(Service::Mta, &opts.mta_url)?;
    let ca = Endpoint::parse(Service::Ca, &opts.ca_url)?;
    let http = Http::new(&opts.tls)?;
    let store = Store::open(&opts.store_dir)?;
    let pass = opts.passphrase.as_deref().map(|p| p.as_slice());

    // Steps 1–3.
    let key = NewKey::generate(opts.key_type)?;
    progress(&Step::KeyGenerated {
        key_type: opts.key_type,
        key_id: key.key_id.clone(),
    });
    let csr = key.csr_pem(&account)?;
    progress(&Step::CsrBuilt {
        account: account.clone(),
        key_id: key.key_id.clone(),
    });

    // Step 4.
    let creds = &opts.credentials;
    let code = api::request_totp(&http, &mta, &account, creds, &key.key_id).await?;
    progress(&Step::TotpIssued {
        account: account.clone(),
        key_id: key.key_id.clone(),
        expires_at: code.expires_at.clone(),
    });

    // Before step 5: the new CA checks everything it can without a code
    // (CSR, key, domain, rate limits), so a refusal there, or a wrong --ca,
    // leaves the identity at the previous CA alone.
    api::check_enrollment(&http, &ca, &account, &key.key_id, &csr).await?;

    // Step 5.
    let revoked_elsewhere =
        revoke_at_other_ca(&http, &store, &mta, &ca, &account, creds, progress).await?;

    // Steps 6–10 up to storage. Should they fail after step 5 revoked the
    // old identity, the error says so and how to recover.
    let kept = match issue_and_keep(
        &http, &store, &ca, &account, &key, &csr, &code.totp, pass, progress,
    )
    .await
    {
        Ok(k) => k,
        Err(cause) => {
            return Err(match revoked_elsewhere {
                Some((serial, previous_ca)) => Error::EnrollAfterRevocation {
                    retry: format!(
                        "mailid enroll --email {account} --mta {} --ca {}",
                        mta.base(),
                        ca.base()
                    ),
                    account,
                    serial,
                    previous_ca,
                    cause: Box::new(cause),
                },
                None => cause,
            })
        }
    };
    let Kept {
        resp,
        summary,
        stored,
        dir,
    } = kept;
    if let Err(e) = publish(&http, &store, &mta, &account, creds, &stored, progress).await {
        return Err(Error::NotPublished {
            serial: stored.serial.clone(),
            dir: dir.clone(),
            retry: format!("mailid upload --email {account} --mta {}", mta.base()),
            cause: Box::new(e),
        });
    }

    Ok(Outcome {
        account,
        serial: summary.serial,
        key_id: key.key_id,
        key_type: key.key_type.label().to_string(),
        not_before: summary.not_before,
        not_after: summary.not_after,
        ca: ca.base(),
        mta: mta.base(),
        revoked: resp.revoked,
        revoked_at_previous_ca: revoked_elsewhere.map(|(serial, _)| serial),
        store: dir,
        certificate: resp.certificate,
        chain: resp.chain,
    })
}

/// What steps 6–10 leave before publication.
struct Kept {
    resp: mailid_shared::protocol::EnrollResponse,
    summary: CertSummary,
    stored: StoredIdentity,
    dir: PathBuf,
}

/// Steps 6–9 (CSR and code to the CA, the answer checked) and step 10's
/// storage of key and certificate.
#[allow(clippy::too_many_arguments)]
async fn issue_and_keep(
    http: &Http,
    store: &Store,
    ca: &Endpoint,
    account: &Address,
    key: &NewKey,
    csr: &str,
    totp: &str,
    pass: Option<&[u8]>,
    progress: &mut dyn FnMut(&Step),
) -> Result<Kept> {
    let resp = api::enroll(http, ca, account, csr, totp).await?;
    let summary = check_issued(ca, account, key, &resp)?;
    progress(&Step::Sent { ca_url: ca.base() });
    progress(&Step::Checked);
    progress(&Step::CaRevoked {
        serials: resp.revoked.clone(),
    });
    progress(&Step::Issued {
        serial: summary.serial.clone(),
        key_id: key.key_id.clone(),
        not_after: summary.not_after.clone(),
    });

    // Step 10: keep, then publish.
    let der = key.pkcs8_der();
    let stored = store.record_new(
        account,
        &NewIdentity {
            serial: &summary.serial,
            key_id: &key.key_id,
            key_type: key.key_type.label(),
            ca_url: &ca.base(),
            issuer: &summary.issuer,
            not_before: &summary.not_before,
            not_after: &summary.not_after,
            certificate_pem: &resp.certificate,
            chain_pem: &resp.chain,
            key_pkcs8: &der,
            revoked: &resp.revoked,
        },
        pass,
    )?;
    let dir = store.path_of(&stored);
    progress(&Step::Stored {
        serial: summary.serial.clone(),
        key_id: key.key_id.clone(),
        dir: dir.clone(),
    });
    Ok(Kept {
        resp,
        summary,
        stored,
        dir,
    })
}

/// Uploads a stored identity to the MTA and notes it in the store.
pub async fn publish(
    http: &Http,
    store: &Store,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    id: &StoredIdentity,
    progress: &mut dyn FnMut(&Step),
) -> Result<()> {
    let cert_pem = store.certificate_pem(id)?;
    let chain_pem = store.chain_pem(id)?;
    api::upload(http, mta, account, creds, &id.serial, &cert_pem, &chain_pem).await?;
    store.mark_published(account, &id.serial, &mta.base())?;
    progress(&Step::Published {
        serial: id.serial.clone(),
        key_id: id.key_id.clone(),
        mta_url: mta.base(),
    });
    Ok(())
}

/// Checks the CA's answer: our account, our key, a chain that signed it.
fn check_issued(
    ca: &Endpoint,
    account: &Address,
    key: &NewKey,
    resp: &mailid_shared::protocol::EnrollResponse,
) -> Result<CertSummary> {
    let bad = |detail: String| Error::BadAnswer {
        service: Service::Ca,
        url: ca.url("/v1/certificates"),
        detail,
    };
    let der = cert::pem_to_der(&resp.certificate).map_err(|e| bad(e.to_string()))?;
    let summary = cert::summarize(&der).map_err(|e| bad(e.to_string()))?;
    if summary.key_id != key.key_id || resp.key_id != key.key_id {
        return Err(bad(format!(
            "the certificate is for key ID {}, not ours ({})",
            summary.key_id, key.key_id
        )));
    }
    if &resp.account != account || !summary.emails.iter().any(|e| e == account.as_str()) {
        return Err(bad(format!("the certificate does not name {account}")));
    }
    if summary.serial != resp.serial {
        return Err(bad(format!(
            "serial {} in the answer, {} in the certificate",
            resp.serial, summary.serial
        )));
    }
    let chain =
        pem::decode_chain(&resp.chain, "CERTIFICATE").map_err(|e| bad(format!("chain: {e}")))?;
    if !chain
        .first()
        .is_some_and(|issuer| cert::issued_by(&der, issuer))
    {
        return Err(bad(
            "the certificate is not signed by the first certificate of the chain".into(),
        ));
    }
    Ok(summary)
}

/// Step 5: when the store holds a valid identity from a different CA,
/// revoke it there (reason superseded) with a code bound to its key.
/// Returns its serial and the previous CA's URL.
async fn revoke_at_other_ca(
    http: &Http,
    store: &Store,
    mta: &Endpoint,
    ca: &Endpoint,
    account: &Address,
    creds: &Credentials,
    progress: &mut dyn FnMut(&Step),
) -> Result<Option<(Serial, String)>> {
    let entry = store.account(account)?;
    let Some(old) = entry.current().filter(|i| i.is_valid_now()).cloned() else {
        progress(&Step::NoOtherCa);
        return Ok(None);
    };
    if same_ca(http, store, ca, &old).await? {
        progress(&Step::NoOtherCa);
        return Ok(None);
    }
    let old_ca = Endpoint::parse(Service::Ca, &old.ca_url)?;
    let code = api::request_totp(http, mta, account, creds, &old.key_id).await?;
    let (reason, revoked_at, already) = match api::revoke(
        http,
        &old_ca,
        &old.serial,
        &code.totp,
        Some(RevocationReason::Superseded),
    )
    .await
    {
        Ok(r) => (r.reason, r.revoked_at, false),
        // Already revoked there (or expired): take the CA's record of it.
        Err(e) if e.problem_code() == Some("conflict") => {
            let info = api::certificate_info(http, &old_ca, &old.serial).await?;
            let now = mailid_shared::timefmt::rfc3339(mailid_shared::timefmt::now_unix());
            (
                info.reason.unwrap_or(RevocationReason::Superseded),
                info.revoked_at.unwrap_or(now),
                true,
            )
        }
        Err(e) => return Err(e),
    };
    store.mark_revoked(account, &old.serial, reason, &revoked_at)?;
    progress(&Step::PreviousRevoked {
        serial: old.serial.clone(),
        key_id: old.key_id.clone(),
        ca_url: old_ca.base(),
        reason,
        already,
    });
    Ok(Some((old.serial, old_ca.base())))
}

/// Whether `old` came from the CA at `ca`: the same base URL, or the CA's
/// certificate signed it.
async fn same_ca(http: &Http, store: &Store, ca: &Endpoint, old: &StoredIdentity) -> Result<bool> {
    if old.ca_url.trim_end_matches('/') == ca.base() {
        return Ok(true);
    }
    let ca_der = api::ca_certificate(http, ca).await?;
    let old_der = cert::pem_to_der(&store.certificate_pem(old)?)?;
    Ok(cert::issued_by(&old_der, &ca_der))
}
