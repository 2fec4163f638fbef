//! Identity publication (SPEC §4): the checks on `PUT /v1/identity` and
//! the lookup behind `GET /v1/identity/{address}`.
//!
//! An upload is accepted only if the certificate chains (through optional
//! intermediates from the uploaded chain) to a CA certificate registered
//! with `ca add --trust-cert`, is within its validity, is an end-entity
//! certificate allowed for mail, names exactly the authenticated account as
//! its one rfc822Name, and is not revoked in its issuer's latest CRL.

pub mod crl;
pub mod x509;

use der::Decode;
use mailid_shared::problem::ErrorCode;
use mailid_shared::protocol::{IdentityUpload, PublishedIdentity};
use mailid_shared::translog::Event;
use mailid_shared::{pem, Address, KeyId, Problem, Serial, StrongAddress};
use x509_cert::Certificate;

use crate::store::{IdentityRow, Store};
use crl::CrlChecker;

/// Longest chain of intermediates followed.
const MAX_INTERMEDIATES: usize = 4;

/// Decodes a PEM bundle of certificates (the `certificate` or `chain` of an
/// upload) and parses each; `what` names the field in errors.
pub fn parse_certs(text: &str, what: &str) -> Result<Vec<(Vec<u8>, Certificate)>, Problem> {
    let ders = pem::decode_chain(text, "CERTIFICATE")
        .map_err(|e| Problem::bad_request(format!("{what}: {e}")))?;
    ders.into_iter()
        .map(|der| {
            Certificate::from_der(&der)
                .map(|c| (der, c))
                .map_err(|e| Problem::bad_request(format!("{what} is not a certificate: {e}")))
        })
        .collect()
}

fn within(cert: &Certificate, now: i64) -> bool {
    let (nb, na) = x509::validity(cert);
    nb <= now && now <= na
}

/// Checks an upload by `account`; returns the row to publish.
pub async fn check_upload(
    store: &Store,
    crls: &CrlChecker,
    account: &Address,
    upload: &IdentityUpload,
    now: i64,
) -> Result<IdentityRow, Problem> {
    let mut leaf = parse_certs(&upload.certificate, "certificate")?;
    if leaf.len() != 1 {
        return Err(Problem::bad_request(
            "certificate must hold exactly one certificate",
        ));
    }
    let (leaf_der, leaf) = leaf.remove(0);
    let supplied = match upload.chain.as_deref() {
        Some(text) if !text.trim().is_empty() => parse_certs(text, "chain")?,
        _ => Vec::new(),
    };
    let mut trusted = Vec::new();
    for (name, der) in store.trusted_certs().await? {
        match Certificate::from_der(&der) {
            Ok(c) => trusted.push((der, c, name)),
            Err(e) => {
                tracing::warn!(ca = %name, error = %e, "trusted CA certificate does not parse")
            }
        }
    }

    // Build the path leaf → intermediates → trusted certificate.
    let mut path: Vec<&(Vec<u8>, Certificate)> = Vec::new();
    let mut current = &leaf;
    let anchor = loop {
        if let Some(t) = trusted.iter().find(|(_, t, _)| x509::issued_by(current, t)) {
            break t;
        }
        let next = supplied.iter().find(|(_, s)| {
            x509::issued_by(current, s)
                && x509::is_ca(s)
                && within(s, now)
                && !path.iter().any(|p| p.1 == *s)
        });
        match next {
            Some(n) if path.len() < MAX_INTERMEDIATES => {
                path.push(n);
                current = &n.1;
            }
            _ => {
                return Err(Problem::bad_request(
                    "the certificate does not chain to a CA this MTA trusts",
                ))
            }
        }
    };
    if !within(&anchor.1, now) {
        return Err(Problem::bad_request(
            "the trusted CA certificate is outside its validity",
        ));
    }
    let (not_before, not_after) = x509::validity(&leaf);
    if now < not_before {
        return Err(Problem::bad_request("the certificate is not yet valid"));
    }
    if now > not_after {
        return Err(Problem::bad_request("the certificate has expired"));
    }
    if x509::is_ca(&leaf) || !x509::allows_email(&leaf) {
        return Err(Problem::bad_request(
            "the certificate is not an end-entity certificate for mail",
        ));
    }
    match x509::single_rfc822_name(&leaf) {
        Some(a) if a == *account => {}
        _ => {
            return Err(Problem::bad_request(format!(
                "the certificate must name exactly {account} as its one rfc822Name"
            )))
        }
    }
    let issuer = path.first().map(|p| &p.1).unwrap_or(&anchor.1);
    if crls.is_revoked(&leaf, issuer).await? {
        return Err(Problem::new(
            ErrorCode::Conflict,
            "the certificate is revoked in its CA's latest CRL",
        ));
    }
    let spki = x509::spki_der(&leaf).map_err(|e| Problem::bad_request(e.to_string()))?;
    let serial = Serial::from_bytes(leaf.tbs_certificate.serial_number.as_bytes());
    let mut chain: Vec<Vec<u8>> = path.iter().map(|p| p.0.clone()).collect();
    chain.push(anchor.0.clone());
    Ok(IdentityRow {
        address: account.clone(),
        certificate: leaf_der,
        chain: pem::encode_chain(&chain),
        key_id: KeyId::of_spki(&spki).as_bytes().to_vec(),
        serial: serial.to_string(),
        not_after,
        ca_name: anchor.2.clone(),
    })
}

/// The identity published for a (strong) address: 404 when there is none,
/// the account is disabled, the CA it chains to is no longer registered
/// (see [`Store::identity`]), it has expired, the address names another key, or the certificate has
/// been revoked since it was published (checked against its issuer's CRL,
/// see [`CrlChecker::is_revoked_cached`]).
pub async fn lookup(
    store: &Store,
    crls: &CrlChecker,
    address: &str,
    now: i64,
) -> Result<PublishedIdentity, Problem> {
    let strong = StrongAddress::parse(address)
        .map_err(|e| Problem::bad_request(format!("bad address: {e}")))?;
    let none = || Problem::not_found(format!("no identity published for {address}"));
    let row = store.identity(&strong.address).await?.ok_or_else(none)?;
    let key_id = KeyId::from_bytes(&row.key_id).map_err(Problem::internal)?;
    // Parsed once, for the key ID and the revocation checks.
    let cert = Certificate::from_der(&row.certificate).ok();
    if let Some(asked) = &strong.key_id {
        if !names_key(asked, &key_id, cert.as_ref()) {
            return Err(none());
        }
    }
    // Withdrawn (and logged, SPEC §11) when a lookup first notices.
    if row.not_after < now {
        store
            .withdraw_identity(&row.address, row.serial.clone(), Event::WithdrawnExpired)
            .await?;
        return Err(Problem::not_found(format!(
            "the identity published for {address} has expired"
        )));
    }
    if published_revoked(crls, &row, cert.as_ref()).await {
        store
            .withdraw_identity(&row.address, row.serial.clone(), Event::WithdrawnRevoked)
            .await?;
        return Err(Problem::not_found(format!(
            "the identity published for {address} was revoked by its CA"
        )));
    }
    let serial: Serial = row.serial.parse().map_err(Problem::internal)?;
    Ok(PublishedIdentity {
        account: row.address,
        certificate: pem::encode("CERTIFICATE", &row.certificate),
        chain: row.chain,
        key_id,
        serial,
        not_after: mailid_shared::timefmt::rfc3339(row.not_after),
        history: None,
    })
}

/// Whether the key ID of a strong address names the published key: the
/// stored (V=2) key ID, or the identifier of another version (V=0, 1, 3;
/// SPEC §3 parses all four) computed from the certificate's key.
fn names_key(asked: &KeyId, stored: &KeyId, cert: Option<&Certificate>) -> bool {
    if asked.version() == stored.version() {
        return asked == stored;
    }
    cert.and_then(|c| x509::spki_der(c).ok())
        .and_then(|spki| KeyId::compute(asked.version(), &spki).ok())
        .is_some_and(|k| k == *asked)
}

/// Whether a published identity is on its issuer's CRL (the issuer is the
/// first certificate of the stored chain). Unknown (no CRL at all, or rows
/// that do not parse) counts as not revoked: the certificate passed the
/// revocation check when it was uploaded.
async fn published_revoked(
    crls: &CrlChecker,
    row: &IdentityRow,
    cert: Option<&Certificate>,
) -> bool {
    let Some(cert) = cert else {
        return false;
    };
    let Some(issuer) = pem::decode_chain(&row.chain, "CERTIFICATE")
        .ok()
        .and_then(|c| c.into_iter().next())
        .and_then(|der| Certificate::from_der(&der).ok())
    else {
        return false;
    };
    match crls.is_revoked_cached(cert, &issuer).await {
        Some(revoked) => revoked,
        None => {
            tracing::warn!(account = %row.address, "no CRL known for a published identity");
            false
        }
    }
}
