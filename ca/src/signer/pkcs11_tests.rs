//! Tests of the PKCS#11 key against a real SoftHSM2 token (one private
//! token directory for this test process; `apt-get install softhsm2`).

use std::sync::{Mutex, OnceLock};

use super::*;
use crate::signer::token::{ecdsa_der, generate_pair};
use crate::signer::{verify, CaKey};
use cryptoki::object::{Attribute, AttributeType};
use std::path::PathBuf;

const PIN: &str = "1234";
const TOKEN: &str = "unit";

/// The SoftHSM2 module on this machine.
pub(crate) fn module() -> PathBuf {
    mailid_tests::softhsm::module()
}

/// Sets up this process's token once (SOFTHSM2_CONF is read at
/// C_Initialize, once per process), and serialises the tests: one of them
/// finalises the module under the others.
fn setup() -> std::sync::MutexGuard<'static, ()> {
    static ONCE: OnceLock<()> = OnceLock::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    ONCE.get_or_init(|| {
        // Kept for the whole process (the module reads it once).
        let token = mailid_tests::softhsm::SoftHsm::new(TOKEN, PIN, "5678");
        std::env::set_var("SOFTHSM2_CONF", &token.conf);
        std::mem::forget(token);
    });
    lock(&SERIAL)
}

fn uri(object: &str, pin: &str) -> KeyUri {
    KeyUri::parse(&format!(
        "pkcs11:token={TOKEN};object={object}?module-path={}&pin-value={pin}",
        module().display()
    ))
    .unwrap()
}

/// The private key's CKA_SENSITIVE, CKA_EXTRACTABLE and CKA_TOKEN.
fn private_flags(key: &Pkcs11Key) -> (bool, bool, bool) {
    let (session, handle, _) = key.checkout().ok().unwrap();
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
            ],
        )
        .unwrap();
    let (mut s, mut x, mut t) = (false, true, false);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => s = v,
            Attribute::Extractable(v) => x = v,
            Attribute::Token(v) => t = v,
            _ => {}
        }
    }
    (s, x, t)
}

#[test]
fn generated_keys_sign_verifiably_and_stay_in_the_token() {
    let _g = setup();
    for kt in [
        KeyType::P256,
        KeyType::P384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
    ] {
        let label = format!("gen-{kt}");
        let (key, made) = Pkcs11Key::open_or_generate(&uri(&label, PIN), kt).unwrap();
        assert!(made);
        assert_eq!(key.key_type(), kt);
        assert_eq!(private_flags(&key), (true, false, true), "{kt}");
        // Opening it again finds the same key, whatever type is asked for.
        let (again, made) = Pkcs11Key::open_or_generate(&uri(&label, PIN), KeyType::P256).unwrap();
        assert!(!made);
        assert_eq!(again.der_bytes(), key.der_bytes());
        let key = CaKey::Pkcs11(key);
        for msg in [&b""[..], b"to be signed", &[7u8; 5000][..]] {
            let sig = key.sign_raw(msg).unwrap();
            verify(&key, msg, &sig);
        }
    }
}

#[test]
fn ecdsa_der_matches_rustcrypto() {
    use rand::RngCore;
    let mut rng = rand::rngs::OsRng;
    for i in 0..200 {
        for (kt, n) in [(KeyType::P256, 32), (KeyType::P384, 48)] {
            let mut raw = vec![0u8; 2 * n];
            rng.fill_bytes(&mut raw);
            // Leading zero octets and high bits (a 0x00 pad in DER).
            match i % 4 {
                0 => raw[..2].fill(0),
                1 => raw[n] |= 0x80,
                2 => raw[n..n + 3].fill(0),
                _ => raw[0] |= 0x80,
            }
            raw[n - 1] |= 1;
            raw[2 * n - 1] |= 1;
            let want = match kt {
                KeyType::P256 => p256::ecdsa::Signature::from_slice(&raw)
                    .unwrap()
                    .to_der()
                    .as_bytes()
                    .to_vec(),
                _ => p384::ecdsa::Signature::from_slice(&raw)
                    .unwrap()
                    .to_der()
                    .as_bytes()
                    .to_vec(),
            };
            assert_eq!(ecdsa_der(&raw, kt).unwrap(), want, "{kt} {raw:02x?}");
        }
    }
    assert!(ecdsa_der(&[1; 63], KeyType::P256).is_err());
    assert!(ecdsa_der(&[1; 64], KeyType::Rsa2048).is_err());
}

#[test]
fn a_lost_login_is_logged_in_again() {
    let _g = setup();
    let (key, _) = Pkcs11Key::open_or_generate(&uri("relogin", PIN), KeyType::P256).unwrap();
    let key = CaKey::Pkcs11(key);
    let CaKey::Pkcs11(k) = &key else {
        unreachable!()
    };
    verify(&key, b"one", &key.sign_raw(b"one").unwrap());
    // Another session of this process logs the user out: every session of
    // the application on the token is logged out with it.
    let ctx = context(&module()).unwrap();
    let slot = find_slot(&ctx, k.uri()).unwrap();
    ctx.open_ro_session(slot).unwrap().logout().unwrap();
    let before = k.openings.load(Ordering::Relaxed);
    verify(&key, b"two", &key.sign_raw(b"two").unwrap());
    assert_eq!(
        k.openings.load(Ordering::Relaxed),
        before + 1,
        "the token was opened again"
    );
}

#[test]
fn a_finalized_module_is_opened_again() {
    let _g = setup();
    let (key, _) = Pkcs11Key::open_or_generate(&uri("reinit", PIN), KeyType::P384).unwrap();
    let key = CaKey::Pkcs11(key);
    let CaKey::Pkcs11(k) = &key else {
        unreachable!()
    };
    verify(&key, b"one", &key.sign_raw(b"one").unwrap());
    // C_Finalize: every session handle of the process is invalid now.
    context(&module()).unwrap().finalize().unwrap();
    let before = k.openings.load(Ordering::Relaxed);
    verify(&key, b"two", &key.sign_raw(b"two").unwrap());
    assert_eq!(k.openings.load(Ordering::Relaxed), before + 1);
    // Pooled sessions are reused: no further opening.
    verify(&key, b"three", &key.sign_raw(b"three").unwrap());
    assert_eq!(k.openings.load(Ordering::Relaxed), before + 1);
}

#[test]
fn a_replaced_key_is_not_used() {
    let _g = setup();
    let u = uri("replaced", PIN);
    let (key, _) = Pkcs11Key::open_or_generate(&u, KeyType::P256).unwrap();
    // Someone destroys the key pair and makes another under the label.
    let ctx = context(&module()).unwrap();
    let slot = find_slot(&ctx, &u).unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    login(&s, PIN, &u).unwrap();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let h = find_one(&s, &u, class).unwrap().unwrap();
        s.destroy_object(h).unwrap();
    }
    generate_pair(&s, &u, KeyType::P256).unwrap();
    match key.sign(b"x") {
        Err(SignError::Unavailable(why)) => {
            assert!(why.contains("no longer the CA's key"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn opening_errors_name_the_problem() {
    let _g = setup();
    Pkcs11Key::open_or_generate(&uri("errors", PIN), KeyType::P256).unwrap();
    let cases = [
        (uri("errors", "0000"), "wrong PIN for token 'unit'"),
        (uri("nosuchkey", PIN), "no private key labelled 'nosuchkey'"),
        (
            KeyUri::parse(&format!(
                "pkcs11:token=nosuchtoken;object=errors?module-path={}&pin-value={PIN}",
                module().display()
            ))
            .unwrap(),
            "no token labelled 'nosuchtoken'",
        ),
        (
            KeyUri::parse(
                "pkcs11:token=unit;object=errors?module-path=/nonexistent/lib.so&pin-value=1",
            )
            .unwrap(),
            "cannot load the PKCS#11 module /nonexistent/lib.so",
        ),
    ];
    for (u, want) in cases {
        let e = format!("{:#}", Pkcs11Key::open(&u).err().unwrap());
        assert!(e.contains(want), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(!e.contains("0000"), "{e}");
    }
}

#[test]
fn concurrent_signatures_share_the_session_pool() {
    let _g = setup();
    let (key, _) = Pkcs11Key::open_or_generate(&uri("pool", PIN), KeyType::P256).unwrap();
    let key = CaKey::Pkcs11(key);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let key = &key;
            s.spawn(move || {
                for i in 0..20u8 {
                    let msg = [t, i];
                    verify(key, &msg, &key.sign_raw(&msg).unwrap());
                }
            });
        }
    });
    let CaKey::Pkcs11(k) = &key else {
        unreachable!()
    };
    let idle = lock(&k.live).as_ref().map_or(0, |l| l.idle.len());
    assert!((1..=MAX_IDLE).contains(&idle), "{idle} idle sessions");
    assert_eq!(k.openings.load(Ordering::Relaxed), 1);
}
