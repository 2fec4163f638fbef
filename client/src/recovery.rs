//! The secret a key backup is encrypted under (SPEC §10): a 256-bit
//! recovery key from the OS CSPRNG, its text form, and its 2-of-3 Shamir
//! shares (the `blahaj` crate), each share tagged so that one of another
//! backup, a damaged one or the same one twice is recognised.
//!
//! ```text
//! recovery key   ABCDE-FGHIJ-…-XY    52 Base32 characters, '-' every 5
//! share file     # comment lines (what it is, how to use it)
//!                mailid-share v1 2-of-3 #1 backup=TTTTT-TTTTT-TTTTT-T account=alice@example.com
//!                SSSSS-SSSSS-…       Base32 of x ‖ y(32) ‖ check(4)
//! ```
//! `backup=` is a tag of the recovery key: the first 10 bytes of
//! SHA-256("mailid-backup-v1\0" ‖ key), public and useless for guessing a
//! 256-bit key; every share of one backup carries it, and the key the
//! shares combine to must have it. `check` is the first 4 bytes of
//! SHA-256 over the header's fields and the share, so a damaged share or
//! an edited header is named before anything is combined.

use std::fmt;

use blahaj::{Share, Sharks};
use data_encoding::BASE32_NOPAD;
use mailid_shared::Address;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Bytes in a recovery key.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 10;
const CHECK_LEN: usize = 4;
const MAGIC: &str = "mailid-share";
const VERSION: &str = "v1";

/// A backup's recovery key.
pub struct RecoveryKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(…)")
    }
}

impl RecoveryKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        RecoveryKey(k)
    }

    /// The key in its text form: Base32, upper case, `-` every 5.
    pub fn display(&self) -> Zeroizing<String> {
        Zeroizing::new(dashed(&BASE32_NOPAD.encode(self.0.as_ref())))
    }

    /// The passphrase the backups are encrypted under: the text form
    /// without dashes, so `openssl pkcs8 -passin pass:…` opens a backup too.
    pub fn passphrase(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(BASE32_NOPAD.encode(self.0.as_ref()).into_bytes())
    }

    /// Reads a recovery key from text (dashes, spaces and case ignored;
    /// lines starting with `#` skipped).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::Invalid("this is not a mailid recovery key".into());
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(bad)?;
        let bytes = Zeroizing::new(decode_dashed(line).ok_or_else(bad)?);
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| bad())?;
        Ok(RecoveryKey(Zeroizing::new(key)))
    }

    /// The public tag of this key that shares carry.
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let mut h = Sha256::new();
        h.update(b"mailid-backup-v1\0");
        h.update(self.0.as_ref());
        h.finalize()[..TAG_LEN].try_into().expect("10 of 32 bytes")
    }

    /// Splits the key into `n` share files, any `k` of which recover it.
    pub fn split(&self, k: u8, n: u8, account: &Address) -> Result<Vec<Zeroizing<String>>> {
        if k < 2 || n < k {
            return Err(Error::Invalid(format!(
                "cannot split into {k}-of-{n}: need 2 <= k <= n"
            )));
        }
        let tag = self.tag();
        let shares: Vec<Share> = Sharks(k).dealer(self.0.as_ref()).take(n.into()).collect();
        let mut files = Vec::with_capacity(shares.len());
        for (i, share) in shares.iter().enumerate() {
            let header = Header {
                k,
                n,
                index: i + 1,
                tag,
                account: account.clone(),
            };
            let mut body = Zeroizing::new(Vec::<u8>::from(share));
            let check = header.check(&body);
            body.extend_from_slice(&check);
            files.push(Zeroizing::new(format!(
                "# mailid recovery share {i} of {n} for {account}: any {k} of the {n} shares \
                 recover the account's backed-up keys.\n\
                 # Keep each share in a different place. To recover on a new device:\n\
                 #   mailid recover --email {account} --mta URL --share-file F --share-file G\n\
                 {}\n{}\n",
                header.line(),
                dashed(&BASE32_NOPAD.encode(&body)),
                i = i + 1,
            )));
        }
        Ok(files)
    }

    /// Combines share files (as text, each with a name for messages) into
    /// the recovery key they were split from.
    pub fn combine(account: &Address, files: &[(String, String)]) -> Result<Self> {
        let mut parsed: Vec<(String, Header, Share)> = Vec::new();
        for (name, text) in files {
            let (header, share) =
                parse_share(text).map_err(|why| Error::Invalid(format!("{name}: {why}")))?;
            if &header.account != account {
                return Err(Error::Invalid(format!(
                    "{name} is a share for {}, not {account}",
                    header.account
                )));
            }
            if let Some((first, h, _)) = parsed.first() {
                if h.tag != header.tag || h.k != header.k || h.n != header.n {
                    return Err(Error::Invalid(format!(
                        "{name} is a share of another backup than {first}"
                    )));
                }
            }
            if let Some((same, _, _)) = parsed.iter().find(|(_, h, _)| h.index == header.index) {
                return Err(Error::Invalid(format!(
                    "{name} and {same} are the same share (#{}): give two different shares",
                    header.index
                )));
            }
            parsed.push((name.clone(), header, share));
        }
        let Some((_, h, _)) = parsed.first() else {
            return Err(Error::Invalid("no recovery share given".into()));
        };
        let (k, tag) = (h.k, h.tag);
        if parsed.len() < usize::from(k) {
            return Err(Error::Invalid(format!(
                "{} share{} given, but this backup needs {k} of its shares",
                parsed.len(),
                if parsed.len() == 1 { "" } else { "s" }
            )));
        }
        let shares: Vec<&Share> = parsed.iter().map(|(_, _, s)| s).collect();
        let secret = Zeroizing::new(
            Sharks(k)
                .recover(shares)
                .map_err(|e| Error::Invalid(format!("the shares do not combine: {e}")))?,
        );
        let key: [u8; KEY_LEN] = secret
            .as_slice()
            .try_into()
            .map_err(|_| Error::Invalid("the shares do not combine to a recovery key".into()))?;
        let key = RecoveryKey(Zeroizing::new(key));
        if key.tag() != tag {
            return Err(Error::Invalid(
                "the shares do not combine to their backup's recovery key (one is damaged)".into(),
            ));
        }
        Ok(key)
    }
}

/// The header line of a share.
struct Header {
    k: u8,
    n: u8,
    index: usize,
    tag: [u8; TAG_LEN],
    account: Address,
}

impl Header {
    fn line(&self) -> String {
        format!(
            "{MAGIC} {VERSION} {}-of-{} #{} backup={} account={}",
            self.k,
            self.n,
            self.index,
            dashed(&BASE32_NOPAD.encode(&self.tag)),
            self.account
        )
    }

    fn check(&self, share: &[u8]) -> [u8; CHECK_LEN] {
        let mut h = Sha256::new();
        h.update(self.line().as_bytes());
        h.update(b"\n");
        h.update(share);
        h.finalize()[..CHECK_LEN].try_into().expect("4 of 32 bytes")
    }

    fn parse(line: &str) -> std::result::Result<Header, String> {
        let not = || "not a mailid recovery share".to_string();
        let mut f = line.split_whitespace();
        if f.next() != Some(MAGIC) {
            return Err(not());
        }
        match f.next() {
            Some(VERSION) => {}
            Some(v) => return Err(format!("a recovery share of version {v}, not {VERSION}")),
            None => return Err(not()),
        }
        let (k, n) = f
            .next()
            .and_then(|t| t.split_once("-of-"))
            .and_then(|(k, n)| Some((k.parse::<u8>().ok()?, n.parse::<u8>().ok()?)))
            .filter(|(k, n)| *k >= 2 && n >= k)
            .ok_or_else(not)?;
        let index = f
            .next()
            .and_then(|t| t.strip_prefix('#'))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| (1..=usize::from(n)).contains(i))
            .ok_or_else(not)?;
        let tag: [u8; TAG_LEN] = f
            .next()
            .and_then(|t| t.strip_prefix("backup="))
            .and_then(decode_dashed)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(not)?;
        let account = f
            .next()
            .and_then(|t| t.strip_prefix("account="))
            .and_then(|a| Address::parse(a).ok())
            .ok_or_else(not)?;
        if f.next().is_some() {
            return Err(not());
        }
        Ok(Header {
            k,
            n,
            index,
            tag,
            account,
        })
    }
}

/// A share file: its header and the share, checked.
fn parse_share(text: &str) -> std::result::Result<(Header, Share), String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let header = Header::parse(lines.next().unwrap_or_default())?;
    let body: String = lines.collect();
    let mut bytes = Zeroizing::new(
        decode_dashed(&body).ok_or_else(|| "the share is not Base32 text".to_string())?,
    );
    if bytes.len() != 1 + KEY_LEN + CHECK_LEN {
        return Err("the share has the wrong length (damaged?)".into());
    }
    let check = bytes.split_off(1 + KEY_LEN);
    if header.check(&bytes) != check.as_slice() {
        return Err("the share is damaged (its check does not match)".into());
    }
    let share = Share::try_from(bytes.as_slice()).map_err(|e| e.to_string())?;
    if usize::from(share.x.0) != header.index {
        return Err("the share does not match its header".into());
    }
    Ok((header, share))
}

/// Base32 text with `-` after every 5 characters.
fn dashed(b32: &str) -> String {
    let mut out = String::with_capacity(b32.len() + b32.len() / 5);
    for (i, c) in b32.chars().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Decodes Base32 text, ignoring `-`, white space and case.
fn decode_dashed(text: &str) -> Option<Vec<u8>> {
    let clean: String = text
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    BASE32_NOPAD.decode(clean.as_bytes()).ok()
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
