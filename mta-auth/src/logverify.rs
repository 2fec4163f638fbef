//! `mailid-mta-auth log verify`: recomputes the identity log's whole tree
//! from its entries and checks every stored row against it (entries, leaf
//! hashes, account chains and heads, stored hashes, tree state, every
//! checkpoint's signature and root), for audits and after restores. The
//! first failure is the answer.

use mailid_shared::translog::tlog_tiles::{self, Error as TlogError, HashReader};
use mailid_shared::translog::{leaf_hash, Entry, Hash, LogVerifier};
use serde::Serialize;

use crate::store::LogDump;

/// What a passing check saw.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the tree.
    pub tree_size: u64,
    /// Entries not yet in the tree (appended since the last sequencer run).
    pub pending: u64,
    /// Accounts (blinds) with entries.
    pub accounts: u64,
    pub checkpoints: u64,
    /// Size of the newest checkpoint.
    pub latest_checkpoint: u64,
}

/// The recomputed stored hashes, in memory.
struct Tree(Vec<Hash>);

impl HashReader for Tree {
    fn read_hashes(&self, idx: &[u64]) -> Result<Vec<Hash>, TlogError> {
        idx.iter()
            .map(|i| {
                self.0
                    .get(*i as usize)
                    .copied()
                    .ok_or(TlogError::IndexesNotInTree)
            })
            .collect()
    }
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

/// Checks every row of `d`, and each signed checkpoint note in `outside`
/// (kept elsewhere: `log verify --checkpoint FILE`) against the tree;
/// `Err` names the first failure. Besides the
/// rows, it holds the tree's stored hashes and an index of the entries by
/// account (4 bytes an entry), not a map of chains.
pub fn verify(d: &LogDump, outside: &[String]) -> Result<Verified, String> {
    // Entries: bytes, leaf hashes, decoded fields = columns.
    let mut by_leaf: Vec<(u64, Hash)> = Vec::new();
    let mut pending = 0;
    for e in &d.entries {
        let at = format!("entry seq {} of account {}", e.seq, &hex(&e.blind)[..16]);
        let decoded = Entry::decode(&e.entry).map_err(|x| format!("{at}: {x}"))?;
        let lh = leaf_hash(&e.entry);
        if lh.0 != e.leaf_hash {
            return Err(format!("{at}: stored leaf hash does not match the entry"));
        }
        if decoded.blind != e.blind || decoded.seq != e.seq {
            return Err(format!("{at}: its columns do not match its bytes"));
        }
        match e.leaf_index {
            Some(i) => by_leaf.push((i, lh)),
            None => pending += 1,
        }
    }
    // Chains: the entries ordered by (account, seq), one run per account.
    let mut order: Vec<u32> = (0..d.entries.len() as u32).collect();
    order.sort_unstable_by_key(|&i| {
        let e = &d.entries[i as usize];
        (e.blind, e.seq)
    });
    let blind_at = |k: usize| &d.entries[order[k] as usize].blind;
    // (blind, newest entry index, certificate if live), by blind.
    let mut newest: Vec<([u8; 32], u32, Option<[u8; 32]>)> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let blind = blind_at(start);
        let end =
            start + order[start..].partition_point(|&i| d.entries[i as usize].blind == *blind);
        let bytes: Vec<Vec<u8>> = order[start..end]
            .iter()
            .map(|&i| d.entries[i as usize].entry.clone())
            .collect();
        let decoded = mailid_shared::translog::check_chain(&bytes)
            .map_err(|e| format!("account {}: {e}", &hex(blind)[..16]))?;
        let live = decoded.last().filter(|e| e.event.is_live()).map(|e| e.cert);
        newest.push((*blind, order[end - 1], live));
        start = end;
    }
    for (blind, seq, head) in &d.heads {
        let who = format!("account {}", &hex(blind)[..16]);
        let last = newest
            .binary_search_by(|n| n.0.cmp(blind))
            .map(|k| &d.entries[newest[k].1 as usize])
            .map_err(|_| format!("{who}: its head names seq {seq} but it has no entries"))?;
        if last.seq as i64 != *seq || last.leaf_hash != *head {
            return Err(format!(
                "{who}: its head is seq {seq} but its newest entry is seq {} (entries deleted or changed)",
                last.seq
            ));
        }
    }
    if newest.len() != d.heads.len() {
        return Err("an account with entries has no head".into());
    }
    // The tree: leaf indexes without gaps, every stored hash recomputed.
    by_leaf.sort_by_key(|l| l.0);
    let mut tree = Tree(Vec::with_capacity(by_leaf.len() * 2));
    for (n, (i, lh)) in by_leaf.iter().enumerate() {
        if *i != n as u64 {
            return Err(format!("leaf index {n} is missing (next is {i})"));
        }
        let hs = tlog_tiles::stored_hashes_for_record_hash(n as u64, *lh, &tree)
            .map_err(|e| format!("recomputing leaf {n}: {e}"))?;
        tree.0.extend(hs);
    }
    let size = by_leaf.len() as u64;
    if d.state.0 != size {
        return Err(format!(
            "the log state says {} leaves, the entries give {size}",
            d.state.0
        ));
    }
    if d.hashes.len() != tree.0.len() {
        return Err(format!(
            "{} stored hashes, the entries give {}",
            d.hashes.len(),
            tree.0.len()
        ));
    }
    for (k, (idx, h)) in d.hashes.iter().enumerate() {
        if *idx != k as u64 || tree.0[k].0 != *h {
            return Err(format!("stored hash {idx} does not match the entries"));
        }
    }
    let root = tlog_tiles::tree_hash(size, &tree).map_err(|e| e.to_string())?;
    if root.0[..] != d.state.1[..] {
        return Err("the log state's root does not match the entries".into());
    }
    // Published identities = the live newest entries.
    let mut identities: Vec<&([u8; 32], [u8; 32])> = d.identities.iter().collect();
    identities.sort_unstable_by_key(|i| i.0);
    let mut live = newest
        .iter()
        .filter_map(|n| n.2.map(|c| (n.0, c)))
        .peekable();
    for (blind, cert) in identities {
        let who = format!("account {}", &hex(blind)[..16]);
        if let Some(l) = live.next_if(|l| l.0 < *blind) {
            return Err(format!(
                "account {}: its logged identity is not published (deleted without a log entry)",
                &hex(&l.0)[..16]
            ));
        }
        match live.next_if(|l| l.0 == *blind) {
            Some((_, logged)) if logged == *cert => {}
            Some(_) => {
                return Err(format!(
                    "{who}: its published certificate is not the logged one"
                ))
            }
            None => return Err(format!("{who}: its published identity is not logged")),
        }
    }
    if let Some(l) = live.next() {
        return Err(format!(
            "account {}: its logged identity is not published (deleted without a log entry)",
            &hex(&l.0)[..16]
        ));
    }
    // Checkpoints: signed by the recorded key, roots of the tree.
    let vkey = d.vkey.as_deref().ok_or("no log key is recorded")?;
    let verifier = LogVerifier::from_vkey(vkey).map_err(|e| format!("recorded log key: {e}"))?;
    let in_tree = |at: &str, note: &str| -> Result<(u64, [u8; 32]), String> {
        let parsed = verifier
            .open_checkpoint(note.as_bytes())
            .map_err(|e| format!("{at}: {e}"))?;
        let (n, root) = (parsed.size(), parsed.hash().0);
        if n > size {
            return Err(format!("{at}: beyond the tree's {size} leaves"));
        }
        let want = tlog_tiles::tree_hash(n, &tree).map_err(|e| e.to_string())?;
        if want.0 != root {
            return Err(format!("{at}: its root is not the tree's"));
        }
        Ok((n, root))
    };
    for cp in &d.checkpoints {
        let at = format!("checkpoint {}", cp.size);
        if in_tree(&at, &cp.note)? != (cp.size, cp.root) {
            return Err(format!("{at}: its note does not match its row"));
        }
    }
    // Checkpoints kept outside the database (an auditor's, a client's):
    // a restore of an old backup, checkpoints and all, cuts the log back
    // below them; another tree of the same size is a fork.
    for (i, note) in outside.iter().enumerate() {
        let at = format!("given checkpoint #{}", i + 1);
        in_tree(&at, note)?;
    }
    Ok(Verified {
        tree_size: size,
        pending,
        accounts: newest.len() as u64,
        checkpoints: d.checkpoints.len() as u64,
        latest_checkpoint: d.checkpoints.last().map(|c| c.size).unwrap_or(0),
    })
}
