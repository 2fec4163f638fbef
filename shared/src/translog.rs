//! The identity log's formats (SPEC §11), shared by the MTA that writes it
//! and the client that checks it: canonical entries, RFC 9162 leaf hashes,
//! per-account chains, C2SP signed-note checkpoints with Ed25519 on
//! aws-lc-rs, and proof checks (the tree arithmetic is Go sumdb/tlog's, via
//! `tlog_tiles`; the note framing is Go sumdb/note's, via `signed_note`).

use aws_lc_rs::signature::{self as ring_sig, KeyPair, UnparsedPublicKey};
use data_encoding::BASE64;
use serde::{Deserialize, Serialize};
use signed_note::{Note, VerificationError, Verifier, Verifiers};
pub use tlog_tiles::{self, Hash, EMPTY_HASH};

/// The entry format this code writes and reads.
pub const ENTRY_VERSION: u8 = 1;
/// Ed25519's signature type byte in a C2SP vkey and key hash.
const ED25519_TYPE: u8 = 0x01;

/// Why a log entry, checkpoint, chain or proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("malformed log entry: {0}")]
    Entry(&'static str),
    #[error("malformed checkpoint")]
    Checkpoint,
    #[error("checkpoint not signed by the log key {0}")]
    Signature(String),
    #[error("checkpoint origin {0:?} is not the log's")]
    Origin(String),
    #[error("malformed log key")]
    Key,
    #[error("{0}")]
    Chain(String),
    #[error("proof does not verify")]
    Proof,
}

/// What happened to an account's published identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Published with no live identity before.
    Published = 1,
    /// Replaced a live identity (the entry carries the new one).
    Superseded = 2,
    /// Withdrawn: its CA revoked it (the entry carries the withdrawn one).
    WithdrawnRevoked = 3,
    /// Withdrawn: it expired.
    WithdrawnExpired = 4,
    /// Withdrawn: its CA was removed from the MTA.
    WithdrawnCaRemoved = 5,
}

impl Event {
    /// From the entry's event byte.
    pub fn from_u8(b: u8) -> Option<Event> {
        Some(match b {
            1 => Event::Published,
            2 => Event::Superseded,
            3 => Event::WithdrawnRevoked,
            4 => Event::WithdrawnExpired,
            5 => Event::WithdrawnCaRemoved,
            _ => return None,
        })
    }
    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            Event::Published => "published",
            Event::Superseded => "superseded",
            Event::WithdrawnRevoked => "withdrawn-revoked",
            Event::WithdrawnExpired => "withdrawn-expired",
            Event::WithdrawnCaRemoved => "withdrawn-ca-removed",
        }
    }
    /// Whether the identity the entry carries is live after it.
    pub fn is_live(self) -> bool {
        matches!(self, Event::Published | Event::Superseded)
    }
}

/// One log entry (version 1), decoded; [`Entry::encode`] gives the
/// canonical bytes that are the Merkle leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub event: Event,
    /// The account's blind (a keyed hash of its address).
    pub blind: [u8; 32],
    /// 0 for the account's first entry.
    pub seq: u64,
    /// Leaf hash of entry `seq - 1`; zero for seq 0.
    pub prev: [u8; 32],
    /// Unix seconds of the change.
    pub at: i64,
    /// Binary strong key ID (version byte + digest).
    pub key_id: Vec<u8>,
    /// serialNumber content octets (1..=20).
    pub serial: Vec<u8>,
    /// SHA-256 of the certificate DER.
    pub cert: [u8; 32],
    /// Unix seconds of notAfter.
    pub not_after: i64,
}

impl Entry {
    /// The canonical bytes; `Err` if a variable field does not fit.
    pub fn encode(&self) -> Result<Vec<u8>, LogError> {
        if self.key_id.is_empty() || self.key_id.len() > 255 {
            return Err(LogError::Entry("key ID length"));
        }
        if self.serial.is_empty() || self.serial.len() > 20 {
            return Err(LogError::Entry("serial length"));
        }
        if self.seq == 0 && self.prev != [0; 32] {
            return Err(LogError::Entry("first entry with a previous hash"));
        }
        let mut b = Vec::with_capacity(140 + self.key_id.len() + self.serial.len());
        b.push(ENTRY_VERSION);
        b.push(self.event as u8);
        b.extend_from_slice(&self.blind);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.prev);
        b.extend_from_slice(&self.at.to_be_bytes());
        b.push(self.key_id.len() as u8);
        b.extend_from_slice(&self.key_id);
        b.push(self.serial.len() as u8);
        b.extend_from_slice(&self.serial);
        b.extend_from_slice(&self.cert);
        b.extend_from_slice(&self.not_after.to_be_bytes());
        Ok(b)
    }

    /// Parses canonical bytes: unknown versions or events, wrong lengths,
    /// trailing bytes and a first entry with a previous hash are refused.
    pub fn decode(bytes: &[u8]) -> Result<Entry, LogError> {
        let mut r = Reader(bytes);
        if r.take(1)?[0] != ENTRY_VERSION {
            return Err(LogError::Entry("unknown version"));
        }
        let event = Event::from_u8(r.take(1)?[0]).ok_or(LogError::Entry("unknown event"))?;
        let blind = r.array()?;
        let seq = u64::from_be_bytes(r.array()?);
        let prev = r.array()?;
        let at = i64::from_be_bytes(r.array()?);
        let k = r.take(1)?[0] as usize;
        let key_id = r.take(k)?.to_vec();
        let s = r.take(1)?[0] as usize;
        let serial = r.take(s)?.to_vec();
        let cert = r.array()?;
        let not_after = i64::from_be_bytes(r.array()?);
        if !r.0.is_empty() {
            return Err(LogError::Entry("trailing bytes"));
        }
        let e = Entry {
            event,
            blind,
            seq,
            prev,
            at,
            key_id,
            serial,
            cert,
            not_after,
        };
        e.encode()?;
        Ok(e)
    }
}

/// A cursor over entry bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        if self.0.len() < n {
            return Err(LogError::Entry("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], LogError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// RFC 9162 §2.1.1 leaf hash: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    tlog_tiles::record_hash(entry)
}

/// Checks one account's history (canonical entry bytes, in the order
/// served): seq 0, 1, … without gaps, every prev the leaf hash of the entry
/// before, one blind throughout. Returns the decoded entries.
pub fn check_chain(entries: &[Vec<u8>]) -> Result<Vec<Entry>, LogError> {
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut prev = [0u8; 32];
    for (i, bytes) in entries.iter().enumerate() {
        let e = Entry::decode(bytes)?;
        if e.seq != i as u64 {
            return Err(LogError::Chain(if i == 0 {
                format!("history truncated (first entry has seq {})", e.seq)
            } else {
                format!("chain broken at seq {i} (found seq {})", e.seq)
            }));
        }
        if let Some(first) = out.first() {
            if first.blind != e.blind {
                return Err(LogError::Chain(format!("account blind changed at seq {i}")));
            }
        }
        if e.prev != prev {
            return Err(LogError::Chain(format!("chain broken at seq {i}")));
        }
        prev = leaf_hash(bytes).0;
        out.push(e);
    }
    Ok(out)
}

/// The note key hash of an Ed25519 log key: SHA-256(name || "\n" || 0x01 ||
/// pub)[:4], big-endian (C2SP signed-note).
pub fn key_hash(name: &str, public: &[u8]) -> u32 {
    signed_note::key_id(name, &typed(public))
}

/// The C2SP verifier key `name+hash+base64(0x01||pub)`.
pub fn vkey(name: &str, public: &[u8]) -> String {
    format!(
        "{name}+{:08x}+{}",
        key_hash(name, public),
        BASE64.encode(&typed(public))
    )
}

fn typed(public: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(ED25519_TYPE);
    k.extend_from_slice(public);
    k
}

/// Whether `name` may be a log origin (a note key name: non-empty, no
/// spaces or `+`).
pub fn is_origin_valid(name: &str) -> bool {
    signed_note::is_key_name_valid(name) && name.is_ascii()
}

/// The log's signer: an Ed25519 key (aws-lc-rs) and the origin it signs
/// checkpoints as. No `Debug`: it holds the private key.
pub struct LogSigner {
    origin: String,
    id: u32,
    key: ring_sig::Ed25519KeyPair,
}

impl LogSigner {
    /// From a PKCS#8 Ed25519 key; `Err` for a bad key or origin.
    pub fn from_pkcs8(origin: &str, pkcs8: &[u8]) -> Result<LogSigner, LogError> {
        let key = ring_sig::Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| LogError::Key)?;
        LogSigner::new(origin, key)
    }

    /// From a 32-byte seed (test vectors).
    pub fn from_seed(origin: &str, seed: &[u8]) -> Result<LogSigner, LogError> {
        let key = ring_sig::Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| LogError::Key)?;
        LogSigner::new(origin, key)
    }

    fn new(origin: &str, key: ring_sig::Ed25519KeyPair) -> Result<LogSigner, LogError> {
        if !is_origin_valid(origin) {
            return Err(LogError::Origin(origin.to_string()));
        }
        let id = key_hash(origin, key.public_key().as_ref());
        Ok(LogSigner {
            origin: origin.to_string(),
            id,
            key,
        })
    }

    /// A fresh PKCS#8 Ed25519 key.
    pub fn generate_pkcs8() -> Result<Vec<u8>, LogError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        ring_sig::Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| LogError::Key)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }
    /// The C2SP verifier key.
    pub fn vkey(&self) -> String {
        vkey(&self.origin, self.key.public_key().as_ref())
    }
    /// The note key hash.
    pub fn key_hash(&self) -> u32 {
        self.id
    }

    /// The signed checkpoint note of a tree of `size` with `root`.
    pub fn sign_checkpoint(&self, size: u64, root: Hash) -> Result<String, LogError> {
        let cp = tlog_tiles::Checkpoint::new(&self.origin, size, root, "")
            .map_err(|_| LogError::Checkpoint)?;
        let mut note = Note::new(&cp.to_bytes(), &[]).map_err(|_| LogError::Checkpoint)?;
        note.add_sigs(&[self]).map_err(|_| LogError::Checkpoint)?;
        String::from_utf8(note.to_bytes()).map_err(|_| LogError::Checkpoint)
    }
}

impl signed_note::Signer for LogSigner {
    fn name(&self) -> &str {
        &self.origin
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).as_ref().to_vec())
    }
}

/// A pinned log key: verifies checkpoint notes (Ed25519 on aws-lc-rs).
#[derive(Debug, Clone)]
pub struct LogVerifier {
    origin: String,
    id: u32,
    public: Vec<u8>,
}

impl LogVerifier {
    /// From a C2SP vkey `name+hash+base64(0x01||pub32)`; the hash must be
    /// the key's.
    pub fn from_vkey(vkey: &str) -> Result<LogVerifier, LogError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LogError::Key);
        };
        let key = BASE64.decode(key.as_bytes()).map_err(|_| LogError::Key)?;
        if key.len() != 33 || key[0] != ED25519_TYPE || !is_origin_valid(name) {
            return Err(LogError::Key);
        }
        let id = u32::from_str_radix(hash, 16).map_err(|_| LogError::Key)?;
        if hash.len() != 8 || id != key_hash(name, &key[1..]) {
            return Err(LogError::Key);
        }
        Ok(LogVerifier {
            origin: name.to_string(),
            id,
            public: key[1..].to_vec(),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
    pub fn key_hash(&self) -> u32 {
        self.id
    }
    /// The 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Verifies a signed checkpoint note and parses it: signed by this key,
    /// origin = this key's name.
    pub fn open_checkpoint(&self, note: &[u8]) -> Result<tlog_tiles::Checkpoint, LogError> {
        let note = Note::from_bytes(note).map_err(|_| LogError::Checkpoint)?;
        note.verify(self)
            .map_err(|_| LogError::Signature(format!("{:08x}", self.id)))?;
        let cp =
            tlog_tiles::Checkpoint::from_bytes(note.text()).map_err(|_| LogError::Checkpoint)?;
        if cp.origin() != self.origin {
            return Err(LogError::Origin(cp.origin().to_string()));
        }
        Ok(cp)
    }
}

impl Verifier for LogVerifier {
    fn name(&self) -> &str {
        &self.origin
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ring_sig::ED25519, &self.public)
            .verify(msg, sig)
            .is_ok()
    }
}

impl Verifiers for LogVerifier {
    fn verifier(&self, name: &str, id: u32) -> Result<&dyn Verifier, VerificationError> {
        if name == self.origin && id == self.id {
            Ok(self)
        } else {
            Err(VerificationError::UnknownKey {
                name: name.to_string(),
                id,
            })
        }
    }
}

/// Checks an inclusion proof of leaf `index` (hash `leaf`) in the tree of
/// `size` with `root`.
pub fn check_inclusion(
    proof: &[Hash],
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), LogError> {
    if index >= size {
        return Err(LogError::Proof);
    }
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf).map_err(|_| LogError::Proof)
}

/// Checks a consistency proof from the tree (`old_size`, `old_root`) to
/// (`new_size`, `new_root`); equal sizes need equal roots and no proof.
pub fn check_consistency(
    proof: &[Hash],
    old_size: u64,
    old_root: Hash,
    new_size: u64,
    new_root: Hash,
) -> Result<(), LogError> {
    if old_size == 0 || old_size > new_size {
        return Err(LogError::Proof);
    }
    tlog_tiles::check_tree(&proof.to_vec(), new_size, new_root, old_size, old_root)
        .map_err(|_| LogError::Proof)
}

/// A hash in the API: standard padded base64.
pub fn hash_b64(h: &Hash) -> String {
    BASE64.encode(&h.0)
}

/// Parses an API hash.
pub fn parse_hash(s: &str) -> Result<Hash, LogError> {
    let v = BASE64.decode(s.as_bytes()).map_err(|_| LogError::Proof)?;
    let a: [u8; 32] = v.try_into().map_err(|_| LogError::Proof)?;
    Ok(Hash(a))
}

/// `GET /v1/log/key`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogKey {
    pub origin: String,
    /// `origin+<key hash>+base64(0x01||pub32)`.
    pub vkey: String,
    /// The note key hash, 8 hex digits.
    pub key_hash: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// base64 of the 32-byte public key.
    pub public_key: String,
}

/// `GET /v1/log/consistency?from=N&to=M`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// base64 hashes.
    pub proof: Vec<String>,
}

/// One entry of an account's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub seq: u64,
    /// `None` until the entry is in a signed checkpoint.
    pub leaf_index: Option<u64>,
    /// base64 of the canonical entry bytes (authoritative).
    pub entry: String,
    /// Informative decoded fields.
    pub event: String,
    pub key_id: String,
    pub serial: String,
    pub at: String,
}

/// An inclusion proof of the newest entry in `checkpoint`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// base64 hashes.
    pub proof: Vec<String>,
}

/// `history` in `GET /v1/identity/{address}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct History {
    /// base64 of the account's 32-byte blind.
    pub blind: String,
    pub entries: Vec<HistoryEntry>,
    /// The signed checkpoint note the proof is against.
    pub checkpoint: String,
    /// `None` when the newest entry is not yet in a signed checkpoint.
    pub inclusion: Option<InclusionProof>,
}

#[cfg(test)]
#[path = "translog_tests.rs"]
mod tests;
