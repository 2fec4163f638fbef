//! A real pkilint REST server for the tests that check mailid against
//! pkilint's S/MIME and PKIX lints (`serve --lint-url`, SPEC §9): pinned
//! pkilint and uvicorn in a virtualenv (`$MAILID_PKILINT_VENV`, by default
//! `target/pkilint-rest-venv`, made from PyPI the first time), served on a
//! kernel-picked loopback port and stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The pkilint release the tests pin (as scripts/interop.sh does), so a
/// new release's lints cannot change a verdict unnoticed.
pub const PKILINT: &str = "pkilint[rest]==0.13.3";
/// The ASGI server pkilint's REST app runs in.
pub const UVICORN: &str = "uvicorn==0.38.0";

/// A running pkilint REST server.
pub struct Pkilint {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`), what `--lint-url` takes.
    pub url: String,
}

impl Drop for Pkilint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtualenv holding pkilint.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("MAILID_PKILINT_VENV") {
        return v.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pkilint-rest-venv")
}

/// Makes the virtualenv when pkilint is not in it yet (needs python3 and
/// PyPI), starts the server and waits until it answers (importing pkilint
/// takes seconds, half a minute on a busy machine).
pub fn start() -> Pkilint {
    let venv = venv();
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import pkilint.rest, uvicorn"])
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
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                PKILINT,
                UVICORN,
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing pkilint into {} failed", venv.display());
    }
    // The socket is bound before uvicorn starts, so the port is known and
    // connections made before the app is ready wait in the backlog.
    let script = "import socket, uvicorn\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n\
        print(s.getsockname()[1], flush=True)\n\
        from pkilint.rest import app\n\
        uvicorn.Server(uvicorn.Config(app, log_level='warning')).run(sockets=[s])\n";
    let mut child = Command::new(&python)
        .args(["-c", script])
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
        child,
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
