//! `mailid lookup`: the identity an MTA publishes for a (strong) address,
//! checked against what was asked.

use mailid_shared::protocol::PublishedIdentity;
use mailid_shared::StrongAddress;

use crate::api;
use crate::cert::{self, CertSummary};
use crate::error::{Error, Result, Service};
use crate::transport::{Endpoint, Http, TlsOptions};

/// A published identity and what its certificate says.
#[derive(Debug, Clone)]
pub struct Found {
    /// What was asked for.
    pub requested: StrongAddress,
    /// The MTA's answer.
    pub identity: PublishedIdentity,
    /// The certificate's facts.
    pub summary: CertSummary,
}

/// Looks up `address` (plain or strong, e.g. `KEYID?local@domain`) at the
/// MTA and checks that the certificate names the address and, for a
/// key-bound address, has that key.
pub async fn lookup(mta_url: &str, address: &str, tls: &TlsOptions) -> Result<Found> {
    let requested = StrongAddress::parse(address.trim())
        .map_err(|e| Error::Invalid(format!("'{address}' is not a valid mail address: {e}")))?;
    let mta = Endpoint::parse(Service::Mta, mta_url)?;
    let http = Http::new(tls)?;
    let identity = api::published_identity(&http, &mta, &requested).await?;
    let path = api::identity_path(&requested);
    let bad = |detail: String| Error::BadAnswer {
        service: Service::Mta,
        url: mta.url(&path),
        detail,
    };
    let der = cert::pem_to_der(&identity.certificate).map_err(|e| bad(e.to_string()))?;
    let summary = cert::summarize(&der).map_err(|e| bad(e.to_string()))?;
    let account = &requested.address;
    if &identity.account != account || !summary.emails.iter().any(|e| e == account.as_str()) {
        return Err(bad(format!("the certificate does not name {account}")));
    }
    if summary.key_id != identity.key_id || summary.serial != identity.serial {
        return Err(bad(
            "the key ID or serial does not match the certificate".into()
        ));
    }
    if let Some(want) = &requested.key_id {
        // Compare in the requested version's terms: recompute with it.
        let spki = cert::spki_der(&cert::parse(&der)?)?;
        let got =
            mailid_shared::KeyId::compute(want.version(), &spki).map_err(|e| bad(e.to_string()))?;
        if &got != want {
            return Err(bad(format!(
                "the certificate has key ID {}, not {want}",
                summary.key_id
            )));
        }
    }
    Ok(Found {
        requested,
        identity,
        summary,
    })
}
