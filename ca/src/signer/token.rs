//! PKCS#11 token operations for the CA key (see [`super::pkcs11`]): the
//! process-wide context of each module, finding the token and the key
//! pair by label, logging in, reading the public key, generating the key
//! pair, and the DER form of a raw ECDSA signature.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use der::asn1::{OctetString, UintRef};
use der::{Decode, Encode, Header, Length, Tag};

use mailid_shared::sigverify::oids;

use super::uri::KeyUri;
use crate::keys::KeyType;

/// One context per module, for the whole process (a module may be
/// initialised only once).
static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// A PKCS#11 error in one short line (cryptoki's own texts are paragraphs).
pub(super) fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f:?}: {rv:?}"),
        other => other.to_string(),
    }
}

/// The context of `module`, loaded and initialised on first use.
pub(super) fn context(module: &Path) -> anyhow::Result<Pkcs11> {
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
pub(super) fn initialize(ctx: &Pkcs11, module: &Path) -> anyhow::Result<()> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => anyhow::bail!(
            "cannot initialise the PKCS#11 module {}: {}",
            module.display(),
            short(&e)
        ),
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The slot holding the token labelled as the URI says.
pub(super) fn find_slot(ctx: &Pkcs11, uri: &KeyUri) -> anyhow::Result<Slot> {
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
pub(super) fn login(session: &Session, pin: &str, uri: &KeyUri) -> anyhow::Result<()> {
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
pub(super) fn naming(uri: &KeyUri, class: ObjectClass) -> Vec<Attribute> {
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
pub(super) fn find_one(
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
pub(super) fn two_integers(a: &[u8], b: &[u8]) -> anyhow::Result<Vec<u8>> {
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
pub(super) fn read_public(session: &Session, uri: &KeyUri) -> anyhow::Result<(KeyType, Vec<u8>)> {
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

/// Generates the key pair in the token: both halves on the token, the
/// private one sensitive, not extractable, for signing only.
pub(super) fn generate_pair(
    session: &Session,
    uri: &KeyUri,
    kt: KeyType,
) -> anyhow::Result<ObjectHandle> {
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
