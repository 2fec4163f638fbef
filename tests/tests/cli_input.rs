//! Every CLI read is bounded (issue 11, item 12): a file argument that is
//! endless (`/dev/zero`) or over 1 MiB, and a `--password-stdin` line that
//! never ends, give one line on stderr and exit 1 — no growth to gigabytes,
//! no multi-line allocation abort — and change nothing.

use std::io::Write;
use std::process::{Command, Stdio};

use mailid_tests::{bin, CA_BIN, CLIENT_BIN, MTA_BIN};

/// Runs `name args` with `stdin` fed from an endless stream of bytes that
/// holds no newline (or nothing, when `endless_stdin` is false); returns
/// (status, stdout, stderr).
fn run(name: &str, args: &[&str], endless_stdin: bool, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .env_remove("MAILID_PASSWORD")
        .env_remove("MAILID_PASSPHRASE")
        .env_remove("MAILID_CA_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(if endless_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run the binary");
    let feeder = child.stdin.take().map(|mut sink| {
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            // Up to 64 MiB: far more than any bound, far less than a
            // runaway would need to show. Stops when the reader hangs up.
            for _ in 0..1024 {
                if sink.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    });
    let out = child.wait_with_output().expect("wait");
    if let Some(f) = feeder {
        f.join().expect("feeder");
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_failure(name: &str, args: &[&str], stdin: bool, expect: &str) {
    let (code, stderr) = run(name, args, stdin, &[]);
    let what = format!("{name} {args:?}");
    assert_eq!(code, 1, "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("{name}: ")),
        "{what}: {stderr}"
    );
    assert!(lines[0].contains(expect), "{what}: {stderr}");
    println!("{what}: {}", lines[0]);
}

#[test]
fn endless_and_oversized_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; (1 << 20) + 1]).unwrap();
    for file in ["/dev/zero", big.to_str().unwrap()] {
        assert_one_line_failure(CLIENT_BIN, &["key-id", file], false, "larger than 1 MiB");
    }

    // The MTA's trusted CA certificate and the CA's credential, key and
    // certificate files.
    let mta = dir.path().join("mta");
    let ca = dir.path().join("ca");
    let m = mta.to_str().unwrap();
    let c = ca.to_str().unwrap();
    assert_eq!(run(MTA_BIN, &["--data-dir", m, "init"], false, &[]).0, 0);
    assert_one_line_failure(
        MTA_BIN,
        &[
            "--data-dir",
            m,
            "ca",
            "add",
            "ca1",
            "--trust-cert",
            "/dev/zero",
        ],
        false,
        "larger than 1 MiB",
    );
    let (code, err) = run(
        CA_BIN,
        &["--data-dir", c, "init", "--name", "Input Test CA"],
        false,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_one_line_failure(
        CA_BIN,
        &[
            "--data-dir",
            c,
            "mta",
            "add",
            "--domain",
            "example.org",
            "--url",
            "http://127.0.0.1:9",
            "--ca-name",
            "ca1",
            "--credential-file",
            "/dev/zero",
        ],
        false,
        "larger than 1 MiB",
    );
    let fresh = dir.path().join("ca2");
    assert_one_line_failure(
        CA_BIN,
        &[
            "--data-dir",
            fresh.to_str().unwrap(),
            "init",
            "--name",
            "Imported",
            "--import-cert",
            big.to_str().unwrap(),
            "--import-key",
            "/dev/zero",
        ],
        false,
        "larger than 1 MiB",
    );
    assert!(!fresh.exists(), "a failed init leaves nothing behind");
    // Nothing was registered.
    let (code, err) = run(MTA_BIN, &["--data-dir", m, "ca", "list"], false, &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_endless_password_on_stdin_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mta");
    let m = m.to_str().unwrap();
    assert_eq!(run(MTA_BIN, &["--data-dir", m, "init"], false, &[]).0, 0);
    assert_one_line_failure(
        MTA_BIN,
        &[
            "--data-dir",
            m,
            "account",
            "add",
            "alice@example.org",
            "--password-stdin",
        ],
        true,
        "longer than 4096 bytes",
    );
    // No account was made.
    let out = Command::new(bin(MTA_BIN))
        .args(["--data-dir", m, "--json", "account", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    // The client reads its password the same way, before any network use.
    let store = dir.path().join("store");
    assert_one_line_failure(
        CLIENT_BIN,
        &[
            "enroll",
            "--email",
            "alice@example.org",
            "--mta",
            "http://127.0.0.1:9",
            "--ca",
            "http://127.0.0.1:9",
            "--store",
            store.to_str().unwrap(),
            "--password-stdin",
        ],
        true,
        "longer than 4096 bytes",
    );
}
