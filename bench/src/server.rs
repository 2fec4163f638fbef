//! Running the real service binary as a child process.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Environment variables given to every child process started from now on
/// (e.g. the SOFTHSM2_CONF of [`crate::hsm::SoftHsm`]).
static CHILD_ENV: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Sets `key` to `value` for every child process started from now on.
pub fn child_env(key: &str, value: &str) {
    let mut env = CHILD_ENV.lock().unwrap_or_else(|p| p.into_inner());
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

/// The variables [`child_env`] set, for commands started elsewhere.
pub fn child_env_vars() -> Vec<(String, String)> {
    CHILD_ENV.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn with_child_env(cmd: &mut Command) -> &mut Command {
    cmd.envs(child_env_vars())
}

/// A `serve` child process.
pub struct Service {
    child: Child,
    /// `http://…` or `https://…`.
    pub url: String,
}

impl Service {
    /// Starts `BIN --data-dir DIR serve --listen 127.0.0.1:0 ARGS…` and
    /// waits for its `listening on` line.
    pub async fn start(bin: &Path, data_dir: &Path, args: &[String]) -> anyhow::Result<Service> {
        Service::start_trusting(bin, data_dir, args, None).await
    }

    /// [`Service::start`] with `SSL_CERT_FILE=trust` for this process
    /// alone (a CA calling a benchmark MTA whose root is not a system
    /// one); without it the variable is removed, so no service inherits
    /// another's.
    pub async fn start_trusting(
        bin: &Path,
        data_dir: &Path,
        args: &[String],
        trust: Option<&Path>,
    ) -> anyhow::Result<Service> {
        let mut cmd = Command::new(bin);
        match trust {
            Some(file) => cmd.env("SSL_CERT_FILE", file),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        let mut child = with_child_env(&mut cmd)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from serve: {line:?}"))?
            .to_string();
        Ok(Service { child, url })
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far, if known.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.child
            .id()
            .and_then(|pid| cpu_seconds(&format!("/proc/{pid}/stat")))
    }

    /// Stops with SIGTERM and waits for the exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        self.child.wait().await?;
        Ok(())
    }
}

/// Runs an operator command; returns stdout.
pub async fn operator(
    bin: &Path,
    data_dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = with_child_env(&mut Command::new(bin))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().context("no stdin")?;
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await?;
    }
    drop(input);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        anyhow::bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// CPU seconds (utime + stime) from a `/proc/PID/stat` file (Linux, 100
/// ticks per second).
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A load-generator client: many idle connections per host, each dropped
/// after 5 s idle, before the services close it (`HEADER_TIMEOUT`, 10 s);
/// reusing a connection as the server closes it fails the request
/// ("connection closed before message completed").
pub fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(std::time::Duration::from_secs(5))
}
