//! The CA key in a PKCS#11 token (an HSM; SoftHSM2 in tests), through
//! `cryptoki`: one process-wide context per module, a small pool of
//! logged-in sessions, and recovery from a lost session or token.
//!
//! ECDSA keys sign with CKM_ECDSA over a hash computed here (SHA-256 for
//! P-256, SHA-384 for P-384); the token answers raw r‖s, which X.509 wants
//! as a DER ECDSA-Sig-Value ([`super::token::ecdsa_der`], checked against the RustCrypto
//! p256/p384 encoders in the tests). RSA keys sign with CKM_SHA256_RSA_PKCS.
//!
//! When a signature fails because the session, the login or the token is
//! gone, the pool is dropped and the token opened again (slot found by
//! label, login, key found by label) once; if that fails the signature is
//! [`SignError::Unavailable`] and the next one tries again, so signing
//! resumes by itself when the token is back. A re-opened key must still be
//! the CA's (same public key), or it is not used.
//!
//! The token operations themselves (finding, logging in, generating) are
//! in [`super::token`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use sha2::Digest;
use zeroize::Zeroizing;

use super::token::{
    context, ecdsa_der, find_one, find_slot, generate_pair, initialize, lock, login, read_public,
    short,
};
use super::uri::KeyUri;
use super::SignError;
use crate::keys::KeyType;

/// Most idle sessions kept open.
const MAX_IDLE: usize = 8;
/// Least time between two attempts to open a lost token.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

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

#[cfg(test)]
#[path = "pkcs11_tests.rs"]
mod tests;
