//! The CA's one signing interface: every signature the CA key makes (the
//! self-signed root, an intermediate's CSR, identity certificates, CRLs)
//! goes through a [`CaKey`], a PKCS#8 file key ([`file`]) or a key held in
//! a PKCS#11 token ([`pkcs11`]), so nothing else in the CA knows where the
//! key lives.
//!
//! What the CA issues (identity certificates and CRLs) is signed through a
//! [`Signer`], which first hands the exact to-be-signed DER to a pre-sign
//! [`Gate`] (the linter, SPEC §9): a refusal means no signature is made.

pub mod file;
pub mod pkcs11;
mod token;
pub mod uri;

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

use crate::keys::KeyType;

/// What a to-be-signed structure is, as the gate is told, with what the
/// CA meant it to say (the linter checks the TBS against these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A TBSCertificate of an identity certificate.
    Certificate {
        /// The address being certified.
        address: &'a str,
        /// The DER SubjectPublicKeyInfo of the checked CSR.
        spki: &'a [u8],
        /// The signing time (Unix seconds) the validity was counted from.
        now: i64,
    },
    /// A TBSCertList.
    Crl {
        /// The signing time (Unix seconds).
        now: i64,
    },
}

impl Kind<'_> {
    /// `certificate` or `crl`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Certificate { .. } => "certificate",
            Kind::Crl { .. } => "crl",
        }
    }
}

/// A gate's refusal to let something be signed: why, in one line, and the
/// rules that fired (for the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why, in one line.
    pub why: String,
    /// The names of the rules that fired (one entry per finding).
    pub rules: Vec<&'static str>,
}

impl Refusal {
    /// A refusal for `why`, naming no rule.
    pub fn new(why: impl Into<String>) -> Refusal {
        Refusal {
            why: why.into(),
            rules: Vec::new(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// The pre-sign hook: called with the exact TBS DER right before the key
/// signs it; an `Err` stops the signature.
pub type Gate = Arc<dyn Fn(&[u8], Kind<'_>) -> Result<(), Refusal> + Send + Sync>;

/// The gate that lets everything through (the default).
pub fn accept_all() -> Gate {
    Arc::new(|_, _| Ok(()))
}

/// Why no signature was made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    /// The gate refused the to-be-signed content.
    #[error("refused before signing: {0}")]
    Refused(Refusal),
    /// The key cannot be reached now (token gone, session lost and not
    /// re-opened); a later attempt may succeed.
    #[error("the CA key is unavailable: {0}")]
    Unavailable(String),
    /// Any other failure of the key.
    #[error("signing failed: {0}")]
    Failed(String),
}

/// The CA key, wherever it is held.
pub enum CaKey {
    /// A PKCS#8 key file in the data directory.
    File(file::FileKey),
    /// A key pair in a PKCS#11 token.
    Pkcs11(pkcs11::Pkcs11Key),
}

impl CaKey {
    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self {
            CaKey::File(k) => k.key_type(),
            CaKey::Pkcs11(k) => k.key_type(),
        }
    }

    /// A signature over `msg` under [`KeyType::algorithm`], in its X.509
    /// form (ECDSA as a DER ECDSA-Sig-Value), without any gate.
    pub fn sign_raw(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            CaKey::File(k) => k.sign(msg),
            CaKey::Pkcs11(k) => k.sign(msg),
        }
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaKey::File(k) => write!(f, "CaKey::File({})", k.key_type()),
            CaKey::Pkcs11(k) => write!(f, "CaKey::Pkcs11({}, {})", k.key_type(), k.uri()),
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(k) => k.der_bytes(),
            CaKey::Pkcs11(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key_type().algorithm()
    }
}

/// Ungated signing (rcgen only reports `RemoteKeyError`): for the root's
/// self-signature and an intermediate's CSR, made by `init`/`csr`.
impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_raw(msg).map_err(|e| {
            tracing::error!(error = %e, "the CA key failed to sign");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The CA key behind the pre-sign gate: what identity certificates and
/// CRLs are signed with.
#[derive(Clone)]
pub struct Signer {
    key: Arc<CaKey>,
    gate: Gate,
}

impl Signer {
    /// A signer whose gate accepts everything.
    pub fn new(key: CaKey) -> Signer {
        Signer {
            key: Arc::new(key),
            gate: accept_all(),
        }
    }

    /// The same key behind `gate` instead.
    pub fn with_gate(mut self, gate: Gate) -> Signer {
        self.gate = gate;
        self
    }

    /// The key.
    pub fn key(&self) -> &CaKey {
        &self.key
    }

    /// Asks the gate about `tbs`, then signs it.
    pub fn sign(&self, tbs: &[u8], kind: Kind<'_>) -> Result<Vec<u8>, SignError> {
        self.check(tbs, kind)?;
        self.key.sign_raw(tbs)
    }

    /// Asks the gate about `tbs` and signs nothing: the same verdict
    /// [`Signer::sign`] would reach, for a dry run before anything is
    /// used up (enrollment checks its draft before the MTA call).
    pub fn check(&self, tbs: &[u8], kind: Kind<'_>) -> Result<(), SignError> {
        (self.gate)(tbs, kind).map_err(SignError::Refused)
    }

    /// A one-use [`SigningKey`] for rcgen that signs as [`Signer::sign`]
    /// with `kind`, keeping the error rcgen cannot carry
    /// ([`Gated::take_error`]).
    pub fn gated<'a>(&'a self, kind: Kind<'a>) -> Gated<'a> {
        Gated {
            signer: self,
            kind,
            dry_run: false,
            error: RefCell::new(None),
            checked: RefCell::new(None),
        }
    }

    /// [`Signer::gated`] for a dry run: the gate is asked, no signature
    /// is made (an empty one is returned), as [`Signer::check`].
    pub fn dry_run<'a>(&'a self, kind: Kind<'a>) -> Gated<'a> {
        Gated {
            dry_run: true,
            ..self.gated(kind)
        }
    }

    /// Signs the TBS a dry run of this signer's gate passed: the verdict
    /// holds for those exact bytes and that kind, so the gate is not asked
    /// twice. Only a dry run ([`Gated::take_checked`]) makes a [`Checked`].
    pub fn sign_checked(&self, checked: &Checked) -> Result<Vec<u8>, SignError> {
        self.key.sign_raw(&checked.tbs)
    }

    /// Whether signing may block the thread for long (a PKCS#11 token:
    /// run it on the blocking pool); a file key signs in microseconds.
    pub fn may_block(&self) -> bool {
        matches!(*self.key, CaKey::Pkcs11(_))
    }

    /// A [`SigningKey`] that makes no signature (an empty one), for
    /// templates whose signature is thrown away (the CRL's fixed part,
    /// see [`crate::crl_der`]).
    pub fn unsigned(&self) -> Unsigned<'_> {
        Unsigned(&self.key)
    }
}

/// A to-be-signed structure the gate passed on a dry run, with the
/// signing time it was judged at; [`Signer::sign_checked`] signs it.
#[derive(Debug, Clone)]
pub struct Checked {
    tbs: Vec<u8>,
    now: i64,
}

impl Checked {
    /// The TBS DER the gate passed.
    pub fn tbs(&self) -> &[u8] {
        &self.tbs
    }

    /// The signing time (Unix seconds) the gate judged it at.
    pub fn now(&self) -> i64 {
        self.now
    }
}

/// [`Signer::gated`].
pub struct Gated<'a> {
    signer: &'a Signer,
    kind: Kind<'a>,
    dry_run: bool,
    error: RefCell<Option<SignError>>,
    /// On a dry run, the TBS the gate passed.
    checked: RefCell<Option<Checked>>,
}

impl Gated<'_> {
    /// The error of the failed signature, if any.
    pub fn take_error(&self) -> Option<SignError> {
        self.error.borrow_mut().take()
    }

    /// On a dry run, the TBS DER the gate was shown and passed.
    pub fn take_checked(&self) -> Option<Checked> {
        self.checked.borrow_mut().take()
    }
}

impl PublicKeyData for Gated<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.signer.key.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.signer.key.algorithm()
    }
}

impl SigningKey for Gated<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signed = if self.dry_run {
            self.signer.check(msg, self.kind).map(|()| {
                let now = match self.kind {
                    Kind::Certificate { now, .. } | Kind::Crl { now } => now,
                };
                *self.checked.borrow_mut() = Some(Checked {
                    tbs: msg.to_vec(),
                    now,
                });
                Vec::new()
            })
        } else {
            self.signer.sign(msg, self.kind)
        };
        signed.map_err(|e| {
            *self.error.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// [`Signer::unsigned`].
pub struct Unsigned<'a>(&'a CaKey);

impl PublicKeyData for Unsigned<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl SigningKey for Unsigned<'_> {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(Vec::new())
    }
}

/// Checks `sig` over `msg` with `key`'s public key (mailid's own verifier,
/// aws-lc-rs), panicking when it does not verify. For tests.
#[cfg(test)]
pub(crate) fn verify(key: &CaKey, msg: &[u8], sig: &[u8]) {
    use mailid_shared::sigverify::{self, oids};
    let oid = match key.key_type() {
        KeyType::P256 => oids::ECDSA_SHA256,
        KeyType::P384 => oids::ECDSA_SHA384,
        _ => oids::SHA256_WITH_RSA,
    };
    let alg = spki::AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    };
    let spki = sigverify::parse_spki(&key.subject_public_key_info()).unwrap();
    sigverify::verify(&spki, &alg, msg, sig).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_refusing_gate_means_no_signature() {
        let key = CaKey::File(file::FileKey::generate(KeyType::P256).unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let signer = Signer::new(key).with_gate(Arc::new(move |tbs: &[u8], kind| {
            s.fetch_add(1, Ordering::SeqCst);
            assert_eq!(tbs, b"tbs");
            assert_eq!(kind, Kind::Crl { now: 7 });
            Err(Refusal::new("validity too long"))
        }));
        match signer.sign(b"tbs", Kind::Crl { now: 7 }) {
            Err(SignError::Refused(r)) => assert_eq!(r.why, "validity too long"),
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        // Through rcgen: the refusal comes back, no certificate.
        let gated = signer.gated(Kind::Crl { now: 7 });
        assert!(SigningKey::sign(&gated, b"tbs").is_err());
        assert!(matches!(gated.take_error(), Some(SignError::Refused(_))));
    }

    #[test]
    fn the_default_gate_accepts_and_the_signature_verifies() {
        let key = CaKey::File(file::FileKey::generate(KeyType::P256).unwrap());
        let signer = Signer::new(key);
        let sig = signer
            .sign(
                b"hello",
                Kind::Certificate {
                    address: "a@example.com",
                    spki: b"",
                    now: 7,
                },
            )
            .unwrap();
        verify(signer.key(), b"hello", &sig);
    }
}
