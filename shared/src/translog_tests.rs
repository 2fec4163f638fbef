//! Tests of the log formats against the Go sumdb/note, C2SP and RFC 6962
//! vectors (quoted in the issue 15 design note).

use super::*;
use data_encoding::HEXLOWER;
use tlog_tiles::{Error as TlogError, HashReader};

const PETER_SKEY: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

const OUR_CHECKPOINT: &str = "mta.example.org/mailid-log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n— mta.example.org/mailid-log 207L7ro5oe5JEBourx8Gf5LHdT88cewT5gG2ex/RMDR7eVYTQjjoUM4yKQGWa7ZY7v3rBcg55xn9Ev6Np2N/uTM54AA=\n";
const OUR_VKEY: &str =
    "mta.example.org/mailid-log+db4ecbee+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(hex: &str) -> Hash {
    Hash(HEXLOWER.decode(hex.as_bytes()).unwrap().try_into().unwrap())
}

/// The stored hashes of a tree, in memory.
struct Mem(Vec<Hash>);

impl HashReader for Mem {
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

fn rfc6962_tree() -> Mem {
    let mut m = Mem(Vec::new());
    for (n, leaf) in LEAVES.iter().enumerate() {
        let data = HEXLOWER.decode(leaf.as_bytes()).unwrap();
        let hs = tlog_tiles::stored_hashes_for_record_hash(n as u64, leaf_hash(&data), &m).unwrap();
        m.0.extend(hs);
    }
    m
}

#[test]
fn peter_neumann_note_is_reproduced_on_aws_lc() {
    let skey = BASE64.decode(PETER_SKEY.as_bytes()).unwrap();
    let signer = LogSigner::from_seed("PeterNeumann", &skey[1..]).unwrap();
    assert_eq!(signer.key_hash(), 0xc74f20a3);
    assert_eq!(signer.vkey(), PETER_VKEY);
    let mut note = Note::new(TEXT.as_bytes(), &[]).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    let want = format!("{TEXT}\n{PETER_SIG}");
    assert_eq!(String::from_utf8(note.to_bytes()).unwrap(), want);

    let v = LogVerifier::from_vkey(PETER_VKEY).unwrap();
    let parsed = Note::from_bytes(want.as_bytes()).unwrap();
    assert!(parsed.verify(&v).is_ok());
    // A corrupted signature is refused.
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let parsed = Note::from_bytes(bad.as_bytes());
    assert!(parsed.map(|n| n.verify(&v).is_err()).unwrap_or(true));
    // Enoch's key is not Peter's.
    let enoch = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    let e = LogVerifier::from_vkey(enoch).unwrap();
    assert_eq!(e.key_hash(), 0xaf0cfe78);
    assert!(Note::from_bytes(want.as_bytes())
        .unwrap()
        .verify(&e)
        .is_err());
}

#[test]
fn bad_vkeys_are_refused() {
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann",
        "",
    ] {
        assert!(LogVerifier::from_vkey(bad).is_err(), "{bad}");
    }
}

#[test]
fn our_checkpoint_vector() {
    let seed: Vec<u8> = (0u8..32).collect();
    let signer = LogSigner::from_seed("mta.example.org/mailid-log", &seed).unwrap();
    assert_eq!(signer.vkey(), OUR_VKEY);
    let tree = rfc6962_tree();
    let root = tlog_tiles::tree_hash(8, &tree).unwrap();
    assert_eq!(root, h(ROOTS[8]));
    assert_eq!(signer.sign_checkpoint(8, root).unwrap(), OUR_CHECKPOINT);

    let v = LogVerifier::from_vkey(OUR_VKEY).unwrap();
    let cp = v.open_checkpoint(OUR_CHECKPOINT.as_bytes()).unwrap();
    assert_eq!((cp.size(), *cp.hash()), (8, root));
    // Any change to the text breaks the signature.
    let forged = OUR_CHECKPOINT.replace("\n8\n", "\n9\n");
    assert!(v.open_checkpoint(forged.as_bytes()).is_err());
    // Another key with the same name is not this log's.
    let other = LogSigner::from_seed("mta.example.org/mailid-log", &[7u8; 32]).unwrap();
    let by_other = other.sign_checkpoint(8, root).unwrap();
    assert!(matches!(
        v.open_checkpoint(by_other.as_bytes()),
        Err(LogError::Signature(_))
    ));
}

#[test]
fn c2sp_checkpoint_text_round_trips() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = tlog_tiles::Checkpoint::from_bytes(text.as_bytes()).unwrap();
    assert_eq!(cp.to_bytes(), text.as_bytes());
    for bad in [
        "example.com/behind-the-sofa\n020852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    ] {
        assert!(tlog_tiles::Checkpoint::from_bytes(bad.as_bytes()).is_err());
    }
}

#[test]
fn rfc6962_roots_and_stored_hashes() {
    let tree = rfc6962_tree();
    for (n, root) in ROOTS.iter().enumerate() {
        assert_eq!(
            tlog_tiles::tree_hash(n as u64, &tree).unwrap(),
            h(root),
            "{n}"
        );
    }
    let prefixes = "6e340b9c 96a296d2 fac54203 0298d122 07506a85 5f083f0a d37ee418 bc1a0643 \
                    4271a26b 0ebc5d34 b08693ec 46f6ffad ca854ea1 6b47aaf2 5dc9da79";
    let got: Vec<String> = tree.0.iter().map(|x| HEXLOWER.encode(&x.0[..4])).collect();
    assert_eq!(got.join(" "), prefixes);
}

#[test]
fn inclusion_and_consistency_proofs() {
    let tree = rfc6962_tree();
    let leaf = |i: usize| leaf_hash(&HEXLOWER.decode(LEAVES[i].as_bytes()).unwrap());
    for (i, n, want) in [
        (0u64, 8u64, "96a296d2 5f083f0a 6b47aaf2"),
        (5, 8, "bc1a0643 ca854ea1 d37ee418"),
        (2, 3, "fac54203"),
        (1, 5, "6e340b9c 5f083f0a bc1a0643"),
        (0, 1, ""),
    ] {
        let p = tlog_tiles::prove_record(n, i, &tree).unwrap();
        let got: Vec<String> = p.iter().map(|x| HEXLOWER.encode(&x.0[..4])).collect();
        assert_eq!(got.join(" "), want, "({i},{n})");
        let root = h(ROOTS[n as usize]);
        check_inclusion(&p, n, root, i, leaf(i as usize)).unwrap();
        // Go's corruptions.
        assert!(check_inclusion(&p, n, root, i ^ 2, leaf(i as usize)).is_err() || n <= 2);
        assert!(check_inclusion(&p, n * 2, root, i, leaf(i as usize)).is_err());
        assert!(check_inclusion(&p, n, EMPTY_HASH, i, leaf(i as usize)).is_err());
        let mut longer = p.clone();
        longer.push(root);
        assert!(check_inclusion(&longer, n, root, i, leaf(i as usize)).is_err());
        for k in 0..p.len() {
            let mut flipped = p.clone();
            flipped[k].0[0] ^= 1;
            assert!(check_inclusion(&flipped, n, root, i, leaf(i as usize)).is_err());
        }
    }
    for (m, n, want) in [
        (1u64, 1u64, ""),
        (1, 8, "96a296d2 5f083f0a 6b47aaf2"),
        (6, 8, "0ebc5d34 ca854ea1 d37ee418"),
        (2, 5, "5f083f0a bc1a0643"),
        (6, 7, "0ebc5d34 b08693ec d37ee418"),
    ] {
        let p = tlog_tiles::prove_tree(n, m, &tree).unwrap();
        let got: Vec<String> = p.iter().map(|x| HEXLOWER.encode(&x.0[..4])).collect();
        assert_eq!(got.join(" "), want, "({m},{n})");
        let (old, new) = (h(ROOTS[m as usize]), h(ROOTS[n as usize]));
        check_consistency(&p, m, old, n, new).unwrap();
        assert!(check_consistency(&p, m, new, n, old).is_err() || m == n);
        for k in 0..p.len() {
            let mut flipped = p.clone();
            flipped[k].0[31] ^= 0x80;
            assert!(check_consistency(&flipped, m, old, n, new).is_err());
        }
        if !p.is_empty() {
            assert!(check_consistency(&p[1..], m, old, n, new).is_err());
        }
    }
    assert!(check_consistency(&[], 0, EMPTY_HASH, 8, h(ROOTS[8])).is_err());
    assert!(check_consistency(&[], 8, h(ROOTS[8]), 7, h(ROOTS[7])).is_err());
}

fn entry(seq: u64, prev: [u8; 32]) -> Entry {
    Entry {
        event: if seq == 0 {
            Event::Published
        } else {
            Event::Superseded
        },
        blind: [9; 32],
        seq,
        prev,
        at: 1_800_000_000 + seq as i64,
        key_id: vec![1; 33],
        serial: vec![0x42; 16],
        cert: [seq as u8; 32],
        not_after: 1_900_000_000,
    }
}

#[test]
fn entries_round_trip_and_bad_ones_are_refused() {
    let e = entry(0, [0; 32]);
    let b = e.encode().unwrap();
    assert_eq!(b.len(), 1 + 1 + 32 + 8 + 32 + 8 + 34 + 17 + 32 + 8);
    assert_eq!(Entry::decode(&b).unwrap(), e);
    let mut trailing = b.clone();
    trailing.push(0);
    assert!(Entry::decode(&trailing).is_err());
    assert!(Entry::decode(&b[..b.len() - 1]).is_err());
    let mut v = b.clone();
    v[0] = 2;
    assert!(Entry::decode(&v).is_err());
    let mut ev = b.clone();
    ev[1] = 6;
    assert!(Entry::decode(&ev).is_err());
    let mut prev = b.clone();
    prev[42] = 1;
    assert!(Entry::decode(&prev).is_err());
    assert!(Entry::decode(&[]).is_err());
}

#[test]
fn chains_are_checked() {
    let e0 = entry(0, [0; 32]).encode().unwrap();
    let e1 = entry(1, leaf_hash(&e0).0).encode().unwrap();
    let e2 = entry(2, leaf_hash(&e1).0).encode().unwrap();
    assert_eq!(
        check_chain(&[e0.clone(), e1.clone(), e2.clone()])
            .unwrap()
            .len(),
        3
    );
    assert!(check_chain(&[e1.clone(), e2.clone()]).is_err());
    assert!(check_chain(&[e0.clone(), e2.clone()]).is_err());
    let forged = entry(1, [5; 32]).encode().unwrap();
    assert!(check_chain(&[e0.clone(), forged]).is_err());
    let mut other = entry(1, leaf_hash(&e0).0);
    other.blind = [8; 32];
    assert!(check_chain(&[e0, other.encode().unwrap()]).is_err());
}

/// A base64 field of one of the argon2020 JSON responses.
fn json_hashes(v: &serde_json::Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| parse_hash(h.as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn a_real_ct_log_proves_inclusion_and_consistency_at_30_levels() {
    let parse = |t: &str| -> serde_json::Value { serde_json::from_str(t).unwrap() };
    let sth = parse(include_str!("translog_vectors/argon2020-sth.json"));
    let size = sth["tree_size"].as_u64().unwrap();
    let root = parse_hash(sth["sha256_root_hash"].as_str().unwrap()).unwrap();
    let entries = parse(include_str!("translog_vectors/argon2020-entry-10000.json"));
    let data = BASE64
        .decode(
            entries["entries"][0]["leaf_input"]
                .as_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    let inclusion = parse(include_str!(
        "translog_vectors/argon2020-inclusion-10000.json"
    ));
    let path = json_hashes(&inclusion["audit_path"]);
    assert_eq!(path.len(), 30);
    check_inclusion(&path, size, root, 10000, leaf_hash(&data)).unwrap();
    assert!(check_inclusion(&path, size, root, 10001, leaf_hash(&data)).is_err());
    assert!(check_inclusion(&path[1..], size, root, 10000, leaf_hash(&data)).is_err());

    let consistency = parse(include_str!(
        "translog_vectors/argon2020-consistency-3654490.json"
    ));
    let proof = json_hashes(&consistency["consistency"]);
    let old = parse_hash("AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=").unwrap();
    check_consistency(&proof, 3_654_490, old, size, root).unwrap();
    assert!(check_consistency(&proof, 3_654_491, old, size, root).is_err());
    let mut flipped = proof.clone();
    flipped[3].0[7] ^= 0x10;
    assert!(check_consistency(&flipped, 3_654_490, old, size, root).is_err());
}
