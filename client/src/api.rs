//! Typed calls to the two services (SPEC §4 and §5), each checking that
//! the answer is about what was asked.

use mailid_shared::protocol::{
    BackupList, BackupStored, BackupUpload, CertificateInfo, CheckRequest, CheckResponse,
    EnrollRequest, EnrollResponse, IdentityUpload, IdentityUploaded, PublishedIdentity,
    RevocationReason, RevokeRequest, RevokeResponse, TotpRequest, TotpResponse,
};
use mailid_shared::{pem, Address, KeyId, Serial, StrongAddress};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;

use crate::error::{Error, Result};
use crate::transport::{Auth, Credentials, Endpoint, Http};

/// Characters escaped in a path segment: all but unreserved ones and `@`
/// (so `?` travels as `%3F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

fn bad_answer(ep: &Endpoint, path: &str, detail: impl Into<String>) -> Error {
    Error::BadAnswer {
        service: ep.service,
        url: ep.url(path),
        detail: detail.into(),
    }
}

const NO_BODY: Option<&()> = None;

/// Step 4: a TOTP code bound to `key_id` (`POST /v1/totp`).
pub async fn request_totp(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    key_id: &KeyId,
) -> Result<TotpResponse> {
    let path = "/v1/totp";
    let body = TotpRequest {
        key_id: key_id.clone(),
    };
    let what = format!("a TOTP code for {account}");
    let resp: TotpResponse = http
        .json(
            mta,
            Method::POST,
            path,
            Auth::Holder(account, creds),
            Some(&body),
            &what,
        )
        .await?;
    if &resp.account != account || &resp.key_id != key_id {
        return Err(bad_answer(
            mta,
            path,
            format!(
                "the code is for {} and key ID {}, not {account} and {key_id}",
                resp.account, resp.key_id
            ),
        ));
    }
    Ok(resp)
}

/// Before step 5: asks the CA whether it would accept the CSR for
/// `account` and `key_id` (`POST /v1/certificates/check`), without a code.
pub async fn check_enrollment(
    http: &Http,
    ca: &Endpoint,
    account: &Address,
    key_id: &KeyId,
    csr_pem: &str,
) -> Result<CheckResponse> {
    let path = "/v1/certificates/check";
    let body = CheckRequest {
        csr: csr_pem.to_string(),
    };
    let what = format!("the enrollment of {account}");
    let resp: CheckResponse = http
        .json(ca, Method::POST, path, Auth::Anonymous, Some(&body), &what)
        .await
        .map_err(|e| match e.status() {
            // Something answers there, but not a mailid CA.
            Some(s @ (404 | 405)) => Error::Invalid(format!(
                "{} is not a mailid CA: POST {path} answered {s} (check --ca)",
                ca.base()
            )),
            _ => e,
        })?;
    if &resp.account != account || &resp.key_id != key_id {
        return Err(bad_answer(
            ca,
            path,
            format!(
                "it checked {} and key ID {}, not {account} and {key_id}",
                resp.account, resp.key_id
            ),
        ));
    }
    Ok(resp)
}

/// Steps 6–9: CSR + code to the CA (`POST /v1/certificates`).
pub async fn enroll(
    http: &Http,
    ca: &Endpoint,
    account: &Address,
    csr_pem: &str,
    totp: &str,
) -> Result<EnrollResponse> {
    let body = EnrollRequest {
        csr: csr_pem.to_string(),
        totp: totp.to_string(),
    };
    let what = format!("the enrollment of {account}");
    http.json(
        ca,
        Method::POST,
        "/v1/certificates",
        Auth::Anonymous,
        Some(&body),
        &what,
    )
    .await
}

/// Revokes a certificate with a code bound to its key (`POST /v1/revocations`).
pub async fn revoke(
    http: &Http,
    ca: &Endpoint,
    serial: &Serial,
    totp: &str,
    reason: Option<RevocationReason>,
) -> Result<RevokeResponse> {
    let path = "/v1/revocations";
    let body = RevokeRequest {
        serial: serial.clone(),
        totp: totp.to_string(),
        reason,
    };
    let what = format!("the revocation of serial {serial}");
    let resp: RevokeResponse = http
        .json(ca, Method::POST, path, Auth::Anonymous, Some(&body), &what)
        .await?;
    if &resp.serial != serial {
        return Err(bad_answer(
            ca,
            path,
            format!("it revoked serial {} instead of {serial}", resp.serial),
        ));
    }
    Ok(resp)
}

/// A certificate's record at the CA (`GET /v1/certificates/{serial}`).
pub async fn certificate_info(
    http: &Http,
    ca: &Endpoint,
    serial: &Serial,
) -> Result<CertificateInfo> {
    let path = format!("/v1/certificates/{serial}");
    let what = format!("the look-up of serial {serial}");
    let info: CertificateInfo = http
        .json(ca, Method::GET, &path, Auth::Anonymous, NO_BODY, &what)
        .await?;
    if &info.serial != serial {
        return Err(bad_answer(
            ca,
            &path,
            format!("it described serial {}", info.serial),
        ));
    }
    Ok(info)
}

/// The CA's own certificate, DER (`GET /v1/ca.pem`, first certificate).
pub async fn ca_certificate(http: &Http, ca: &Endpoint) -> Result<Vec<u8>> {
    let path = "/v1/ca.pem";
    let bytes = http
        .request(
            ca,
            Method::GET,
            path,
            Auth::Anonymous,
            NO_BODY,
            "the CA certificate request",
        )
        .await?;
    let text = String::from_utf8(bytes).map_err(|_| bad_answer(ca, path, "not PEM text"))?;
    pem::decode_chain(&text, "CERTIFICATE")
        .ok()
        .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)))
        .ok_or_else(|| bad_answer(ca, path, "no CA certificate in the answer"))
}

/// Step 10: publishes the identity at the MTA (`PUT /v1/identity`).
pub async fn upload(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    serial: &Serial,
    certificate_pem: &str,
    chain_pem: &str,
) -> Result<IdentityUploaded> {
    let path = "/v1/identity";
    let body = IdentityUpload {
        certificate: certificate_pem.to_string(),
        chain: (!chain_pem.trim().is_empty()).then(|| chain_pem.to_string()),
    };
    let what = format!("the upload of serial {serial} for {account}");
    let resp: IdentityUploaded = http
        .json(
            mta,
            Method::PUT,
            path,
            Auth::Holder(account, creds),
            Some(&body),
            &what,
        )
        .await?;
    if &resp.serial != serial || &resp.account != account {
        return Err(bad_answer(
            mta,
            path,
            format!("it published serial {} for {}", resp.serial, resp.account),
        ));
    }
    Ok(resp)
}

/// The path of `GET /v1/identity/{address}` for a (strong) address.
pub fn identity_path(address: &StrongAddress) -> String {
    format!(
        "/v1/identity/{}",
        utf8_percent_encode(&address.to_string(), SEGMENT)
    )
}

/// The identity an MTA publishes for an address (`GET /v1/identity/{address}`).
pub async fn published_identity(
    http: &Http,
    mta: &Endpoint,
    address: &StrongAddress,
) -> Result<PublishedIdentity> {
    let path = identity_path(address);
    let what = format!("the look-up of {address}");
    http.json(mta, Method::GET, &path, Auth::Anonymous, NO_BODY, &what)
        .await
}

/// SPEC §10: stores one encrypted key at the MTA (`PUT /v1/backups/{key_id}`).
pub async fn put_backup(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    key_id: &KeyId,
    body: &BackupUpload,
) -> Result<BackupStored> {
    let path = format!("/v1/backups/{key_id}");
    let what = format!("the backup of key ID {key_id} for {account}");
    let resp: BackupStored = http
        .json(
            mta,
            Method::PUT,
            &path,
            Auth::Holder(account, creds),
            Some(body),
            &what,
        )
        .await?;
    if &resp.account != account || &resp.key_id != key_id {
        return Err(bad_answer(
            mta,
            &path,
            format!("it stored key ID {} for {}", resp.key_id, resp.account),
        ));
    }
    Ok(resp)
}

/// SPEC §10: the account's backups at the MTA (`GET /v1/backups`).
pub async fn list_backups(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
) -> Result<BackupList> {
    let path = "/v1/backups";
    let what = format!("the backups of {account}");
    let resp: BackupList = http
        .json(
            mta,
            Method::GET,
            path,
            Auth::Holder(account, creds),
            NO_BODY,
            &what,
        )
        .await?;
    if &resp.account != account {
        return Err(bad_answer(
            mta,
            path,
            format!("it listed the backups of {}", resp.account),
        ));
    }
    Ok(resp)
}

/// SPEC §10: removes one backup (`DELETE /v1/backups/{key_id}`).
pub async fn delete_backup(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    key_id: &KeyId,
) -> Result<()> {
    let path = format!("/v1/backups/{key_id}");
    let what = format!("the removal of the backup of key ID {key_id} for {account}");
    http.request(
        mta,
        Method::DELETE,
        &path,
        Auth::Holder(account, creds),
        NO_BODY,
        &what,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_paths_escape_the_strong_marker() {
        let key = KeyId::of_spki(b"k");
        let a = StrongAddress::parse(&format!("{key}?Bob+x@example.org")).unwrap();
        let p = identity_path(&a);
        assert_eq!(p, format!("/v1/identity/{key}%3Fbob%2Bx@example.org"));
        let plain = StrongAddress::parse("a/b@example.org").unwrap();
        assert_eq!(identity_path(&plain), "/v1/identity/a%2Fb@example.org");
    }
}
