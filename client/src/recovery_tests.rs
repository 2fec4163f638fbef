//! Unit tests of the recovery key and its shares.

use super::*;

fn alice() -> Address {
    Address::parse("alice@example.com").unwrap()
}

fn named(files: &[&Zeroizing<String>], names: &[&str]) -> Vec<(String, String)> {
    files
        .iter()
        .zip(names)
        .map(|(f, n)| (n.to_string(), f.to_string()))
        .collect()
}

#[test]
fn text_form_round_trips_and_ignores_dashes_and_case() {
    let k = RecoveryKey::generate();
    let text = k.display();
    assert_eq!(text.len(), 52 + 10);
    assert!(text.split('-').all(|g| g.len() <= 5));
    let back = RecoveryKey::parse(&text).unwrap();
    assert_eq!(back.0.as_ref(), k.0.as_ref());
    let sloppy = format!("# my key\n\n {} \n", text.to_lowercase().replace('-', " "));
    assert_eq!(
        RecoveryKey::parse(&sloppy).unwrap().0.as_ref(),
        k.0.as_ref()
    );
    assert_eq!(k.passphrase().len(), 52);
    assert!(!String::from_utf8(k.passphrase().to_vec())
        .unwrap()
        .contains('-'));
    assert!(RecoveryKey::parse("ABCDE").is_err());
    assert!(RecoveryKey::parse("").is_err());
    assert!(RecoveryKey::parse(&format!("{}AAAAA", *text)).is_err());
    assert_eq!(format!("{k:?}"), "RecoveryKey(…)");
}

#[test]
fn any_two_of_three_shares_recover_the_key() {
    let k = RecoveryKey::generate();
    let files = k.split(2, 3, &alice()).unwrap();
    assert_eq!(files.len(), 3);
    for (a, b) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        let got =
            RecoveryKey::combine(&alice(), &named(&[&files[a], &files[b]], &["a", "b"])).unwrap();
        assert_eq!(got.0.as_ref(), k.0.as_ref());
    }
    let all = named(&[&files[0], &files[1], &files[2]], &["a", "b", "c"]);
    assert_eq!(
        RecoveryKey::combine(&alice(), &all).unwrap().0.as_ref(),
        k.0.as_ref()
    );
}

#[test]
fn one_share_the_same_share_twice_or_another_backup_is_refused() {
    let k = RecoveryKey::generate();
    let files = k.split(2, 3, &alice()).unwrap();
    let err =
        |v: Vec<(String, String)>| RecoveryKey::combine(&alice(), &v).unwrap_err().to_string();
    let e = err(named(&[&files[0]], &["share-1.txt"]));
    assert!(e.contains("1 share given, but this backup needs 2"), "{e}");
    let e = err(named(&[&files[1], &files[1]], &["x", "y"]));
    assert!(e.contains("y and x are the same share (#2)"), "{e}");
    let other = RecoveryKey::generate().split(2, 3, &alice()).unwrap();
    let e = err(named(&[&files[0], &other[2]], &["mine", "theirs"]));
    assert!(
        e.contains("theirs is a share of another backup than mine"),
        "{e}"
    );
    let bob = Address::parse("bob@example.com").unwrap();
    let e = RecoveryKey::combine(&bob, &named(&[&files[0], &files[1]], &["a", "b"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a is a share for alice@example.com"), "{e}");
    assert!(err(vec![]).contains("no recovery share"));
}

#[test]
fn damaged_or_edited_shares_are_named() {
    let k = RecoveryKey::generate();
    let files = k.split(2, 3, &alice()).unwrap();
    let body_line = |f: &str| f.lines().last().unwrap().to_string();
    // One character of the share changed.
    let body = body_line(&files[1]);
    let c = body.chars().next().unwrap();
    let swapped = if c == 'A' { 'B' } else { 'A' };
    let damaged = files[1].replacen(&body, &format!("{swapped}{}", &body[1..]), 1);
    let e = RecoveryKey::combine(
        &alice(),
        &[("a".into(), files[0].to_string()), ("b".into(), damaged)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("b: the share is damaged"), "{e}");
    // The header's index edited to pass as another share.
    let edited = files[1].replacen(" #2 ", " #3 ", 1);
    let e = RecoveryKey::combine(
        &alice(),
        &[("a".into(), files[0].to_string()), ("b".into(), edited)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("b: the share is damaged"), "{e}");
    // Not a share at all, or truncated.
    for bad in [
        "hello",
        "mailid-share v1 2-of-3 #1",
        "mailid-share v9 2-of-3 #1 x",
    ] {
        let e = RecoveryKey::combine(
            &alice(),
            &[("a".into(), bad.into()), ("b".into(), files[0].to_string())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("a: "), "{e}");
    }
    let short = files[0].replace(&body_line(&files[0]), "ABCDE-FGH");
    let e = RecoveryKey::combine(
        &alice(),
        &[("a".into(), short), ("b".into(), files[1].to_string())],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("wrong length"), "{e}");
}

#[test]
fn a_share_file_says_what_it_is() {
    let k = RecoveryKey::generate();
    let files = k.split(2, 3, &alice()).unwrap();
    let f = &files[2];
    assert!(f.starts_with("# mailid recovery share 3 of 3 for alice@example.com"));
    let header = f.lines().find(|l| l.starts_with("mailid-share")).unwrap();
    let tag = dashed(&BASE32_NOPAD.encode(&k.tag()));
    assert_eq!(
        header,
        format!("mailid-share v1 2-of-3 #3 backup={tag} account=alice@example.com")
    );
    assert!(!f.contains(&*k.display()));
    assert!(k.split(1, 3, &alice()).is_err());
    assert!(k.split(3, 2, &alice()).is_err());
}
