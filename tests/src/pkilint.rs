//! A real pkilint REST server for the tests that check mailid against
//! pkilint's S/MIME and PKIX lints (`serve --lint-url`, SPEC §9): the
//! pinned pkilint and uvicorn of `tests/pkilint-requirements.txt` in a
//! virtualenv (`$MAILID_PKILINT_VENV`, by default
//! `target/pkilint-rest-venv`, made from PyPI the first time), served by
//! `tests/pkilint_serve.py` on a kernel-picked loopback port and stopped on
//! drop. With `$MAILID_PKILINT_URL` set (scripts/test.sh starts one server
//! in the background early: importing pkilint costs half a minute of CPU)
//! the tests use that server instead of starting their own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Exits 0 when the virtualenv holds pkilint's REST app and uvicorn.
const INSTALLED: &str = "import importlib.util as u, sys; \
    sys.exit(not all(u.find_spec(m) for m in ('pkilint', 'fastapi', 'uvicorn')))";

/// Names a running pkilint REST server for the tests to use.
pub const URL_VAR: &str = "MAILID_PKILINT_URL";

/// A pkilint REST server: one this process started, or the shared one.
pub struct Pkilint {
    child: Option<Child>,
    /// Its base URL (`http://127.0.0.1:PORT`), what `--lint-url` takes.
    pub url: String,
}

impl Drop for Pkilint {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv holding pkilint.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("MAILID_PKILINT_VENV") {
        return v.into();
    }
    here().join("../target/pkilint-rest-venv")
}

/// The shared server of [`URL_VAR`], or else a server of this process:
/// makes the virtualenv when pkilint is not in it yet (needs python3 and
/// PyPI), starts the server and waits until it answers (importing pkilint
/// takes seconds, half a minute on a busy machine).
pub fn start() -> Pkilint {
    if let Ok(url) = std::env::var(URL_VAR) {
        let shared = Pkilint { child: None, url };
        shared.wait_ready();
        return shared;
    }
    let venv = venv();
    let python = venv.join("bin/python");
    // Whether the packages are there, without importing pkilint (that
    // alone takes half a minute).
    let ready = Command::new(&python)
        .args(["-c", INSTALLED])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "python3 -m venv {} failed", venv.display());
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(here().join("pkilint-requirements.txt"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing pkilint into {} failed", venv.display());
    }
    let mut child = Command::new(&python)
        .arg(here().join("pkilint_serve.py"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting pkilint's REST server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("reading pkilint's port");
    let port: u16 = line
        .trim()
        .parse()
        .expect("pkilint launcher printed its port");
    let server = Pkilint {
        child: Some(child),
        url: format!("http://127.0.0.1:{port}"),
    };
    server.wait_ready();
    server
}

impl Pkilint {
    /// Waits (up to 5 minutes) until the server answers `GET /version`.
    fn wait_ready(&self) {
        let url = format!("{}/version", self.url);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        for _ in 0..600 {
            if http.get(&url).send().is_ok_and(|a| a.status().is_success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("pkilint at {} did not come up", self.url);
    }
}
