//! Faults of the account's MTA, over the real binaries and real HTTP: the
//! MTA slower than the CA's 5 s timeout, answering 500, answering garbage
//! (not JSON, not HTTP, an endless body, a redirect, a "valid" for someone
//! else or for nobody), refusing connections. A fake misbehaving MTA sits
//! on the port the CA routes the domain to; between faults it forwards to
//! the real MTA. Each fault gives the documented problem document (503
//! `mta-unavailable`, or 403 `totp-rejected` for a verdict about another
//! account), changes nothing in the CA's database, and once the fault
//! clears the same CA process (no restart) issues again.

#[path = "faults_support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mailid_tests::{rss_kib, temp_dir};
use support::*;

// ---------------------------------------------------------------------------
// MTA faults.

/// Both services under `root`, with the CA's route for the domain going
/// through a [`FaultyMta`] that forwards to the real MTA until told otherwise.
fn env_behind_faulty_mta(root: &Path) -> (Env, FaultyMta) {
    let fake: std::cell::OnceCell<FaultyMta> = std::cell::OnceCell::new();
    let env = env_in(
        root,
        root,
        Some(&|real: &str| fake.get_or_init(|| FaultyMta::start(real)).url()),
    );
    (env, fake.into_inner().expect("fake MTA"))
}

#[test]
fn mta_faults_give_503_change_nothing_and_clear_without_restart() {
    let root = temp_dir();
    let (env, fake) = env_behind_faulty_mta(root.path());
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);

    // Through the relay, enrollment works.
    let mut current = serial_of(&try_enroll(&mta, &ca, ALICE));

    let faults = [
        (Mode::Slow, 503, "mta-unavailable"),
        (Mode::Error500, 503, "mta-unavailable"),
        (Mode::NotJson, 503, "mta-unavailable"),
        (Mode::NotHttp, 503, "mta-unavailable"),
        (Mode::Redirect, 503, "mta-unavailable"),
        (Mode::Refuse, 503, "mta-unavailable"),
        (Mode::ValidForOther, 403, "totp-rejected"),
        (Mode::BareValid, 503, "mta-unavailable"),
    ];
    for (mode, status, code) in faults {
        let what = format!("MTA fault {mode:?}");
        let before = account_state(&ca, ALICE);
        fake.set(mode);
        let a = try_enroll(&mta, &ca, ALICE);
        assert_problem(&a, status, code, &what);
        // The 5 s timeout holds (plus margin), nothing hangs.
        assert!(a.took < Duration::from_secs(15), "{what} took {:?}", a.took);
        assert_eq!(account_state(&ca, ALICE), before, "{what} changed the CA");
        assert_eq!(before.0.as_deref(), Some(current.as_str()));
        assert!(healthy(&ca), "{what}: CA not healthy");
        // The fault clears: the same CA process issues again.
        fake.set(Mode::Forward);
        let next = serial_of(&try_enroll(&mta, &ca, ALICE));
        let (cur, n) = account_state(&ca, ALICE);
        assert_eq!(cur.as_deref(), Some(next.as_str()), "after {what}");
        assert_eq!(n, before.1 + 1, "after {what}");
        current = next;
    }
    assert_eq!(
        fake.redirect_hits.load(Ordering::SeqCst),
        0,
        "the CA followed the MTA's redirect (and sent its signed request elsewhere)"
    );
    assert_eq!(ca_pid(&env), pid, "the CA was restarted");
    assert_no_panic(&env.ca.server.as_ref().unwrap().log_text(), "the CA");
}

#[test]
fn an_endless_mta_answer_is_cut_off_and_memory_stays_bounded() {
    let root = temp_dir();
    let (env, fake) = env_behind_faulty_mta(root.path());
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));
    let rss_before = rss_kib(pid).expect("CA RSS");

    fake.set(Mode::EndlessBody);
    let a = try_enroll(&mta, &ca, ALICE);
    assert_problem(&a, 503, "mta-unavailable", "endless MTA answer");
    let rss_after = rss_kib(pid).expect("CA RSS");
    let sent = fake.endless_sent.load(Ordering::SeqCst);
    eprintln!(
        "CA RSS {rss_before} KiB -> {rss_after} KiB; the fake MTA got {} MiB out",
        sent >> 20
    );
    assert!(
        rss_after < 256 * 1024,
        "CA RSS grew to {rss_after} KiB reading an endless MTA answer"
    );
    assert!(
        sent < 64 << 20,
        "the CA read {} MiB of an MTA answer before giving up",
        sent >> 20
    );
    assert_eq!(account_state(&ca, ALICE), (Some(first), 1));

    fake.set(Mode::Forward);
    serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(ca_pid(&env), pid);
}
