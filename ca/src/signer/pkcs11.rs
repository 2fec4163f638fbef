//! The CA key in a PKCS#11 token (an HSM; SoftHSM2 in tests), through
//! `cryptoki`: one process-wide context per module, a small pool of
//! logged-in sessions, and recovery from a lost session or token.
//!
//! ECDSA keys sign with CKM_ECDSA over a hash computed here (SHA-256 for
//! P-256, SHA-384 for P-384); the token answers raw r‖s, which X.509 wants
//! as a DER ECDSA-Sig-Value ([`ecdsa_der`], checked against the RustCrypto
//! p256/p384 encoders in the tests). RSA keys sign with CKM_SHA256_RSA_PKCS.
//!
//! When a signature fails because the session, the login or the token is
//! gone, the pool is dropped and the token opened again (slot found by
//! label, login, key found by label) once; if that fails the signature is
//! [`SignError::Unavailable`] and the next one tries again, so signing
//! resumes by itself when the token is back. A re-opened key must still be
//! the CA's (same public key), or it is not used.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use der::asn1::{OctetString, UintRef};
use der::{Decode, Encode, Header, Length, Tag};
use sha2::Digest;
use zeroize::Zeroizing;

use mailid_shared::sigverify::oids;

use super::uri::KeyUri;
use super::SignError;
use crate::keys::KeyType;

/// Most idle sessions kept open.
const MAX_IDLE: usize = 8;
/// Least time between two attempts to open a lost token.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// One context per module, for the whole process (a module may be
/// initialised only once).
static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// A PKCS#11 error in one short line (cryptoki's own texts are paragraphs).
fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f:?}: {rv:?}"),
        other => other.to_string(),
    }
}

/// The context of `module`, loaded and initialised on first use.
fn context(module: &Path) -> anyhow::Result<Pkcs11> {
    let mut map = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module)
        .map_err(|e| anyhow::anyhow!("cannot load the PKCS#11 module {}: {e}", module.display()))?;
    initialize(&ctx, module)?;
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// C_Initialize; already initialised is fine (this is also how a context
/// finalised under us comes back).
fn initialize(ctx: &Pkcs11, module: &Path) -> anyhow::Result<()> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => anyhow::bail!(
            "cannot initialise the PKCS#11 module {}: {}",
            module.display(),
            short(&e)
        ),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The slot holding the token labelled as the URI says.
fn find_slot(ctx: &Pkcs11, uri: &KeyUri) -> anyhow::Result<Slot> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| anyhow::anyhow!("listing the PKCS#11 slots: {}", short(&e)))?;
    for slot in slots {
        if let Ok(info) = ctx.get_token_info(slot) {
            if info.label().trim_end() == uri.token {
                return Ok(slot);
            }
        }
    }
    anyhow::bail!(
        "no token labelled '{}' in the PKCS#11 module {}",
        uri.token,
        uri.module_path.display()
    )
}

/// Logs the user in (all the application's sessions on the token share
/// the login); already logged in is fine. The PIN is never in an error.
fn login(session: &Session, pin: &str, uri: &KeyUri) -> anyhow::Result<()> {
    let pin = AuthPin::new(pin.into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            anyhow::bail!("wrong PIN for token '{}'", uri.token)
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            anyhow::bail!("the PIN of token '{}' is locked", uri.token)
        }
        Err(e) => anyhow::bail!("logging in to token '{}': {}", uri.token, short(&e)),
    }
}

/// The attributes naming the key pair's half of class `class`.
fn naming(uri: &KeyUri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(class),
        Attribute::Label(uri.object.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

/// The one object of class `class` the URI names, if any.
fn find_one(
    session: &Session,
    uri: &KeyUri,
    class: ObjectClass,
) -> anyhow::Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&naming(uri, class))
        .map_err(|e| anyhow::anyhow!("searching token '{}': {}", uri.token, short(&e)))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => anyhow::bail!(
            "token '{}' holds several keys labelled '{}' (add id=… to the key URI)",
            uri.token,
            uri.object
        ),
    }
}

/// The DER of SEQUENCE { INTEGER a, INTEGER b } (unsigned magnitudes).
fn two_integers(a: &[u8], b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let a = UintRef::new(a)?.to_der()?;
    let b = UintRef::new(b)?.to_der()?;
    let mut out = Header::new(Tag::Sequence, Length::try_from(a.len() + b.len())?)?.to_der()?;
    out.extend_from_slice(&a);
    out.extend_from_slice(&b);
    Ok(out)
}

/// A raw PKCS#11 ECDSA signature (r‖s, each the curve's size) as the DER
/// ECDSA-Sig-Value X.509 signatures hold (RFC 5480 §2.2 / SEC 1).
pub fn ecdsa_der(raw: &[u8], key_type: KeyType) -> anyhow::Result<Vec<u8>> {
    let n = match key_type {
        KeyType::P256 => 32,
        KeyType::P384 => 48,
        other => anyhow::bail!("{other} is not an ECDSA key"),
    };
    anyhow::ensure!(
        raw.len() == 2 * n,
        "the token returned a {}-byte ECDSA signature, not {}",
        raw.len(),
        2 * n
    );
    two_integers(&raw[..n], &raw[n..])
}

/// The type and the public key (as rcgen wants it: the EC point, or the
/// DER RSAPublicKey) of the key pair the URI names.
fn read_public(session: &Session, uri: &KeyUri) -> anyhow::Result<(KeyType, Vec<u8>)> {
    let handle = find_one(session, uri, ObjectClass::PUBLIC_KEY)?.ok_or_else(|| {
        anyhow::anyhow!(
            "token '{}' holds no public key labelled '{}'",
            uri.token,
            uri.object
        )
    })?;
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::EcPoint,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .map_err(|e| anyhow::anyhow!("reading the public key: {}", short(&e)))?;
    let (mut kt, mut params, mut point, mut n, mut e) = (None, None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(k) => kt = Some(k),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    let unsupported = || anyhow::anyhow!("the key '{}' is of an unsupported type", uri.object);
    match kt {
        Some(k) if k == CkKeyType::EC => {
            let params = params.ok_or_else(unsupported)?;
            let key_type = if params == oids::P256.to_der()? {
                KeyType::P256
            } else if params == oids::P384.to_der()? {
                KeyType::P384
            } else {
                anyhow::bail!("the key '{}' is on an unsupported curve", uri.object)
            };
            let point = point.ok_or_else(unsupported)?;
            // CKA_EC_POINT is a DER OCTET STRING; some modules give it bare.
            let point = match OctetString::from_der(&point) {
                Ok(os) if os.as_bytes().first() == Some(&4) => os.as_bytes().to_vec(),
                _ => point,
            };
            let len = if key_type == KeyType::P256 { 65 } else { 97 };
            anyhow::ensure!(
                point.len() == len && point[0] == 4,
                "the key '{}' has a malformed EC point",
                uri.object
            );
            Ok((key_type, point))
        }
        Some(k) if k == CkKeyType::RSA => {
            let n = n.ok_or_else(unsupported)?;
            let e = e.ok_or_else(unsupported)?;
            let start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
            let bits = (n.len() - start) * 8;
            let key_type = match bits {
                2048 => KeyType::Rsa2048,
                3072 => KeyType::Rsa3072,
                4096 => KeyType::Rsa4096,
                _ => anyhow::bail!("RSA CA keys must have 2048, 3072 or 4096 bits, not {bits}"),
            };
            Ok((key_type, two_integers(&n, &e)?))
        }
        _ => Err(unsupported()),
    }
}

/// The live connection to the token: its slot, the key's handle and the
/// idle logged-in sessions.
struct Live {
    ctx: Pkcs11,
    slot: Slot,
    key: ObjectHandle,
    idle: Vec<Session>,
    /// Which opening this is (sessions of an older one are not pooled).
    generation: u64,
}

/// Why one signing attempt failed.
enum Attempt {
    /// Opening the token failed.
    Open(String),
    /// The session, login or token was lost.
    Lost(String),
    /// Anything else.
    Failed(String),
}

/// Errors that mean the session (or what it stands on) is gone.
fn is_loss(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::GeneralError,
            _
        )
    )
}

/// A CA key pair held in a PKCS#11 token.
pub struct Pkcs11Key {
    uri: KeyUri,
    pin: Zeroizing<String>,
    key_type: KeyType,
    public: Vec<u8>,
    live: Mutex<Option<Live>>,
    openings: AtomicU64,
    /// Whether the token was found unavailable (logged once per outage).
    down: AtomicBool,
    /// No new attempt to open the token before this (after a failed one).
    retry_at: Mutex<Option<Instant>>,
}

impl Pkcs11Key {
    /// Opens the key pair the URI names (it must exist): loads the module,
    /// finds the token, logs in, finds the key. Each failure is one line
    /// naming the problem (module, token, PIN, label).
    pub fn open(uri: &KeyUri) -> anyhow::Result<Pkcs11Key> {
        Ok(Self::open_inner(uri, None)?.0)
    }

    /// [`Pkcs11Key::open`], generating the key pair (type `key_type`,
    /// sensitive, not extractable, on the token) when the token holds
    /// none with that label. Says whether it generated one.
    pub fn open_or_generate(uri: &KeyUri, key_type: KeyType) -> anyhow::Result<(Pkcs11Key, bool)> {
        Self::open_inner(uri, Some(key_type))
    }

    fn open_inner(uri: &KeyUri, generate: Option<KeyType>) -> anyhow::Result<(Pkcs11Key, bool)> {
        let pin = uri.pin()?;
        let ctx = context(&uri.module_path)?;
        let slot = find_slot(&ctx, uri)?;
        let session = if generate.is_some() {
            ctx.open_rw_session(slot)
        } else {
            ctx.open_ro_session(slot)
        }
        .map_err(|e| anyhow::anyhow!("opening token '{}': {}", uri.token, short(&e)))?;
        login(&session, &pin, uri)?;
        let mut made = false;
        let key = match (find_one(&session, uri, ObjectClass::PRIVATE_KEY)?, generate) {
            (Some(k), _) => k,
            (None, Some(kt)) => {
                made = true;
                generate_pair(&session, uri, kt)?
            }
            (None, None) => anyhow::bail!(
                "no private key labelled '{}' in token '{}'",
                uri.object,
                uri.token
            ),
        };
        let (key_type, public) = read_public(&session, uri)?;
        let live = Live {
            ctx,
            slot,
            key,
            idle: vec![session],
            generation: 1,
        };
        let key = Pkcs11Key {
            uri: uri.clone(),
            pin,
            key_type,
            public,
            live: Mutex::new(Some(live)),
            openings: 1.into(),
            down: AtomicBool::new(false),
            retry_at: Mutex::new(None),
        };
        Ok((key, made))
    }

    /// The URI (shown without PIN).
    pub fn uri(&self) -> &KeyUri {
        &self.uri
    }

    /// The key's type, as the token holds it.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The public key as rcgen wants it.
    pub fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    /// Opens the token again after a loss; the key must be the same.
    fn reopen(&self) -> anyhow::Result<Live> {
        let uri = &self.uri;
        let ctx = context(&uri.module_path)?;
        initialize(&ctx, &uri.module_path)?;
        let slot = match find_slot(&ctx, uri) {
            Ok(slot) => slot,
            Err(_) => {
                // Some modules list a token that came back only once they
                // are initialised again (SoftHSM2 does): finalise (every
                // session of the process on this module is gone anyway)
                // and look again.
                let _ = ctx.clone().finalize();
                initialize(&ctx, &uri.module_path)?;
                find_slot(&ctx, uri)?
            }
        };
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| anyhow::anyhow!("opening token '{}': {}", uri.token, short(&e)))?;
        login(&session, &self.pin, uri)?;
        let key = find_one(&session, uri, ObjectClass::PRIVATE_KEY)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no private key labelled '{}' in token '{}'",
                uri.object,
                uri.token
            )
        })?;
        let (_, public) = read_public(&session, uri)?;
        anyhow::ensure!(
            public == self.public,
            "the key labelled '{}' in token '{}' is no longer the CA's key",
            uri.object,
            uri.token
        );
        let generation = self.openings.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Live {
            ctx,
            slot,
            key,
            idle: vec![session],
            generation,
        })
    }

    /// A logged-in session and the key's handle (opening the token first
    /// if it was lost).
    fn checkout(&self) -> Result<(Session, ObjectHandle, u64), Attempt> {
        let mut g = lock(&self.live);
        if g.is_none() {
            let mut retry_at = lock(&self.retry_at);
            if retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(Attempt::Open("the token is unavailable".into()));
            }
            match self.reopen() {
                Ok(live) => {
                    *retry_at = None;
                    *g = Some(live);
                }
                Err(e) => {
                    *retry_at = Some(Instant::now() + REOPEN_INTERVAL);
                    return Err(Attempt::Open(format!("{e:#}")));
                }
            }
        }
        let Some(live) = g.as_mut() else {
            return Err(Attempt::Open("the token is not open".into()));
        };
        let session = match live.idle.pop() {
            Some(s) => s,
            None => live.ctx.open_ro_session(live.slot).map_err(|e| {
                let text = format!("opening a session: {}", short(&e));
                if is_loss(&e) {
                    Attempt::Lost(text)
                } else {
                    Attempt::Failed(text)
                }
            })?,
        };
        Ok((session, live.key, live.generation))
    }

    /// Returns a session to the pool (unless the token was re-opened since).
    fn checkin(&self, session: Session, generation: u64) {
        let mut g = lock(&self.live);
        if let Some(live) = g.as_mut() {
            if live.generation == generation && live.idle.len() < MAX_IDLE {
                live.idle.push(session);
            }
        }
    }

    /// Drops every session (the token is opened again on the next use).
    fn forget(&self) {
        let old = lock(&self.live).take();
        drop(old);
    }

    fn attempt(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>, Attempt> {
        let (session, key, generation) = self.checkout()?;
        match session.sign(mech, key, data) {
            Ok(sig) => {
                self.checkin(session, generation);
                Ok(sig)
            }
            Err(e) if is_loss(&e) => Err(Attempt::Lost(short(&e))),
            Err(e) => Err(Attempt::Failed(short(&e))),
        }
    }

    /// Signs `msg` under the key's algorithm; an ECDSA signature comes
    /// back DER-encoded. A lost session or token is re-opened once.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let (mech, data): (Mechanism, Cow<'_, [u8]>) = match self.key_type {
            KeyType::P256 => (Mechanism::Ecdsa, sha2::Sha256::digest(msg).to_vec().into()),
            KeyType::P384 => (Mechanism::Ecdsa, sha2::Sha384::digest(msg).to_vec().into()),
            _ => (Mechanism::Sha256RsaPkcs, msg.into()),
        };
        let token = &self.uri.token;
        let mut reopened = false;
        let raw = match self.attempt(&mech, &data) {
            Ok(sig) => sig,
            Err(Attempt::Failed(e)) => return Err(SignError::Failed(e)),
            Err(Attempt::Lost(e) | Attempt::Open(e)) => {
                if !self.down.load(Ordering::Relaxed) {
                    tracing::warn!(%token, error = %e, "the PKCS#11 session is lost; opening the token again");
                }
                self.forget();
                reopened = true;
                match self.attempt(&mech, &data) {
                    Ok(sig) => sig,
                    Err(Attempt::Failed(e)) => return Err(SignError::Failed(e)),
                    Err(Attempt::Lost(e) | Attempt::Open(e)) => {
                        self.forget();
                        if !self.down.swap(true, Ordering::Relaxed) {
                            tracing::error!(%token, error = %e, "the PKCS#11 token is unavailable; signing resumes when it is back");
                        }
                        return Err(SignError::Unavailable(e));
                    }
                }
            }
        };
        if self.down.swap(false, Ordering::Relaxed) || reopened {
            tracing::info!(%token, "the PKCS#11 token is open again");
        }
        match self.key_type {
            KeyType::P256 | KeyType::P384 => {
                ecdsa_der(&raw, self.key_type).map_err(|e| SignError::Failed(e.to_string()))
            }
            _ => Ok(raw),
        }
    }
}

/// Generates the key pair in the token: both halves on the token, the
/// private one sensitive, not extractable, for signing only.
fn generate_pair(session: &Session, uri: &KeyUri, kt: KeyType) -> anyhow::Result<ObjectHandle> {
    let id = uri
        .id
        .clone()
        .unwrap_or_else(|| rand::random::<[u8; 8]>().to_vec());
    let label = Attribute::Label(uri.object.as_bytes().to_vec());
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        label.clone(),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        label,
        Attribute::Id(id),
    ];
    let mech = match kt {
        KeyType::P256 | KeyType::P384 => {
            let curve = if kt == KeyType::P256 {
                oids::P256
            } else {
                oids::P384
            };
            public.push(Attribute::EcParams(curve.to_der()?));
            Mechanism::EccKeyPairGen
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let bits: u64 = match kt {
                KeyType::Rsa2048 => 2048,
                KeyType::Rsa3072 => 3072,
                _ => 4096,
            };
            public.push(Attribute::ModulusBits(Ulong::from(bits)));
            public.push(Attribute::PublicExponent(vec![1, 0, 1]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (_, private) = session
        .generate_key_pair(&mech, &public, &private)
        .map_err(|e| {
            anyhow::anyhow!(
                "generating a {kt} key in token '{}': {}",
                uri.token,
                short(&e)
            )
        })?;
    Ok(private)
}

#[cfg(test)]
#[path = "pkcs11_tests.rs"]
mod tests;
