//! `mailid lookup --verify` (SPEC §11): checks what an MTA says about an
//! address against the MTA's signed, append-only identity log, and
//! remembers what it saw (trust on first use, then follow the log), so a
//! key served to this client alone, a rewritten history or a forked log
//! shows as one failed line.
//!
//! Steps, each failing with `verify: …`: (1) the log key, pinned per MTA
//! on first use; (2) the checkpoint's signature by it; (3) the account's
//! hash chain; (4) the newest entry is the served certificate; (5) its
//! inclusion proof in the checkpoint; (6) consistency with the checkpoint
//! seen last from this MTA; (7) the account's pinned blind, first key ID
//! and the entry last seen are still in the history. Then the pins move on.

use std::collections::BTreeMap;

use mailid_shared::protocol::PublishedIdentity;
use mailid_shared::translog::{
    self, check_chain, check_consistency, check_inclusion, hash_b64, leaf_hash, parse_hash,
    ConsistencyProof, Entry, Event, Hash, LogKey, LogVerifier,
};
use mailid_shared::{timefmt, Address, KeyId};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::transport::{Auth, Endpoint, Http};

/// The file in the store that holds the pins.
pub const PINS_FILE: &str = "log-pins.json";

/// What this client has seen of each MTA's log.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pins {
    /// By MTA base URL.
    pub mtas: BTreeMap<String, MtaPin>,
}

/// One MTA's log as first and last seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MtaPin {
    /// The log key (C2SP vkey), pinned on first use.
    pub vkey: String,
    pub pinned_at: String,
    /// The largest checkpoint seen.
    pub size: u64,
    pub root: String,
    pub checkpoint_seen_at: String,
    /// By address.
    pub accounts: BTreeMap<Address, AccountPin>,
}

/// One account as last seen in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountPin {
    /// base64 of the account's blind.
    pub blind: String,
    /// The key ID seen on the first verified lookup, and when.
    pub first_key_id: KeyId,
    pub first_seen: String,
    /// The newest entry seen: its seq and leaf hash.
    pub seq: u64,
    pub leaf_hash: String,
}

/// One change of the account's identity, from the history.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub at: String,
    pub event: String,
    /// The identity live before (none after a withdrawal).
    pub from: Option<KeyId>,
    /// The identity live after (none for a withdrawal).
    pub to: Option<KeyId>,
}

/// What a verified lookup established.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The log key hash (8 hex digits) and when it was pinned.
    pub log_key: String,
    pub log_key_pinned_at: String,
    /// The checkpoint checked against, and the one seen before it.
    pub checkpoint_size: u64,
    pub consistent_with: Option<u64>,
    pub entries: usize,
    pub first_key_id: KeyId,
    pub first_seen: String,
    pub current_key_id: KeyId,
    /// Every change after the account's first entry, oldest first.
    pub changes: Vec<Change>,
}

fn fail(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("verify: {what}"))
}

/// Verifies `identity` (the MTA's answer for `account`) and updates the
/// pins in `store`. Nothing is pinned unless everything verifies.
pub async fn verify(
    http: &Http,
    mta: &Endpoint,
    store: &Store,
    account: &Address,
    identity: &PublishedIdentity,
) -> Result<Verified> {
    let mut pins: Pins = match store.read_aux(PINS_FILE)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::file(&store.dir().join(PINS_FILE), e.to_string()))?,
        None => Pins::default(),
    };
    let now = timefmt::rfc3339(timefmt::now_unix());
    let base = mta.base();
    let pinned = pins.mtas.get(&base).cloned();

    // 1. The log key: pinned on first use; a different one is refused.
    let served: LogKey = http
        .json(
            mta,
            Method::GET,
            "/v1/log/key",
            Auth::Anonymous,
            None::<&()>,
            "the log key",
        )
        .await?;
    let vkey = match &pinned {
        Some(p) if p.vkey != served.vkey => {
            let old = LogVerifier::from_vkey(&p.vkey)
                .map(|v| v.key_hash())
                .unwrap_or(0);
            return Err(fail(format!(
                "log key changed (pinned {old:08x} on {}, now {})",
                p.pinned_at, served.key_hash
            )));
        }
        Some(p) => p.vkey.clone(),
        None => served.vkey.clone(),
    };
    let verifier = LogVerifier::from_vkey(&vkey).map_err(|e| fail(format!("the log key: {e}")))?;

    // 2. The checkpoint, signed by that key.
    let history = identity
        .history
        .as_ref()
        .ok_or_else(|| fail("the MTA sent no history for the identity"))?;
    let cp = verifier
        .open_checkpoint(history.checkpoint.as_bytes())
        .map_err(|e| match e {
            translog::LogError::Signature(_) => fail(format!(
                "checkpoint not signed by the pinned log key {:08x}",
                verifier.key_hash()
            )),
            other => fail(format!("checkpoint: {other}")),
        })?;
    let (size, root) = (cp.size(), *cp.hash());

    // 3. The account's chain.
    let bytes: Vec<Vec<u8>> = history
        .entries
        .iter()
        .map(|e| data_encoding::BASE64.decode(e.entry.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| fail("a history entry is not base64"))?;
    let entries = check_chain(&bytes).map_err(fail)?;
    let (Some(newest), Some(newest_bytes)) = (entries.last(), bytes.last()) else {
        return Err(fail("the history is empty"));
    };

    // 4. The newest entry is the identity served.
    let cert_der = crate::cert::pem_to_der(&identity.certificate)?;
    let cert_hash: [u8; 32] = Sha256::digest(&cert_der).into();
    if !newest.event.is_live()
        || newest.cert != cert_hash
        || newest.key_id != identity.key_id.as_bytes()
    {
        return Err(fail(format!(
            "served certificate is not the one logged (seq {})",
            newest.seq
        )));
    }

    // 5. Its inclusion in the checkpoint.
    let inclusion = history.inclusion.as_ref().ok_or_else(|| {
        fail("the newest entry is not yet in a signed checkpoint; retry in a few seconds")
    })?;
    let listed = history.entries.last().and_then(|e| e.leaf_index);
    let proof: Vec<Hash> = inclusion
        .proof
        .iter()
        .map(|h| parse_hash(h))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| fail("the inclusion proof is malformed"))?;
    if listed != Some(inclusion.leaf_index)
        || inclusion.tree_size != size
        || check_inclusion(
            &proof,
            size,
            root,
            inclusion.leaf_index,
            leaf_hash(newest_bytes),
        )
        .is_err()
    {
        return Err(fail(format!(
            "inclusion proof for leaf {} does not match checkpoint {size}",
            inclusion.leaf_index
        )));
    }

    // 6. Consistency with the checkpoint seen before.
    let mut consistent_with = None;
    if let Some(p) = &pinned {
        let old_root = parse_hash(&p.root).map_err(|_| fail("the pinned checkpoint is damaged"))?;
        let forked = || {
            fail(format!(
                "log forked: checkpoint {size} is not consistent with checkpoint {} seen {}",
                p.size, p.checkpoint_seen_at
            ))
        };
        if p.size == size {
            if old_root != root {
                return Err(forked());
            }
        } else {
            let (lo, lo_root, hi, hi_root) = if p.size < size {
                (p.size, old_root, size, root)
            } else {
                (size, root, p.size, old_root)
            };
            let path = format!("/v1/log/consistency?from={lo}&to={hi}");
            let c: ConsistencyProof = http
                .json(
                    mta,
                    Method::GET,
                    &path,
                    Auth::Anonymous,
                    None::<&()>,
                    "a consistency proof",
                )
                .await?;
            let proof: Vec<Hash> = c
                .proof
                .iter()
                .map(|h| parse_hash(h))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| forked())?;
            if c.from != lo
                || c.to != hi
                || check_consistency(&proof, lo, lo_root, hi, hi_root).is_err()
            {
                return Err(forked());
            }
        }
        consistent_with = Some(p.size);
    }

    // 7. The account as pinned.
    let blind = data_encoding::BASE64.encode(&newest.blind);
    let old_account = pinned.as_ref().and_then(|p| p.accounts.get(account));
    if let Some(a) = old_account {
        if a.blind != blind {
            return Err(fail("the account's blind changed"));
        }
        let Some(seen) = bytes.get(a.seq as usize) else {
            return Err(fail(format!(
                "history rolled back (seq {} seen before, now {})",
                a.seq, newest.seq
            )));
        };
        if hash_b64(&leaf_hash(seen)) != a.leaf_hash {
            return Err(fail(format!("history rewritten at seq {}", a.seq)));
        }
    }
    let current_key_id = key_id(newest)?;
    let (first_key_id, first_seen) = match old_account {
        Some(a) => (a.first_key_id.clone(), a.first_seen.clone()),
        None => (current_key_id.clone(), now.clone()),
    };
    let changes = changes(&entries)?;

    // Everything verified: move the pins on.
    let keep_old = pinned.as_ref().is_some_and(|p| p.size > size);
    let mut pin = pinned.unwrap_or(MtaPin {
        vkey,
        pinned_at: now.clone(),
        size,
        root: hash_b64(&root),
        checkpoint_seen_at: now.clone(),
        accounts: BTreeMap::new(),
    });
    if !keep_old {
        pin.size = size;
        pin.root = hash_b64(&root);
        pin.checkpoint_seen_at = now.clone();
    }
    pin.accounts.insert(
        account.clone(),
        AccountPin {
            blind,
            first_key_id: first_key_id.clone(),
            first_seen: first_seen.clone(),
            seq: newest.seq,
            leaf_hash: hash_b64(&leaf_hash(newest_bytes)),
        },
    );
    let result = Verified {
        log_key: format!("{:08x}", verifier.key_hash()),
        log_key_pinned_at: pin.pinned_at.clone(),
        checkpoint_size: size,
        consistent_with,
        entries: entries.len(),
        first_key_id,
        first_seen,
        current_key_id,
        changes,
    };
    pins.mtas.insert(base, pin);
    let text = serde_json::to_vec_pretty(&pins)
        .map_err(|e| Error::Invalid(format!("cannot encode the log pins: {e}")))?;
    store.write_aux(PINS_FILE, &text)?;
    Ok(result)
}

fn key_id(e: &Entry) -> Result<KeyId> {
    KeyId::from_bytes(&e.key_id)
        .map_err(|_| fail(format!("entry seq {} has no valid key ID", e.seq)))
}

/// The changes the history records after its first entry.
fn changes(entries: &[Entry]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut live: Option<KeyId> = None;
    for (i, e) in entries.iter().enumerate() {
        let k = key_id(e)?;
        let after = match e.event {
            Event::Published | Event::Superseded => Some(k),
            _ => None,
        };
        if i > 0 {
            out.push(Change {
                at: timefmt::rfc3339(e.at),
                event: e.event.name().to_string(),
                from: live.clone(),
                to: after.clone(),
            });
        }
        live = after;
    }
    Ok(out)
}
