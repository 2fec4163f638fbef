//! Second replicas for the PostgreSQL benchmarks: copies of a data dir
//! served by their own processes, and a round-robin TCP proxy standing in
//! for the load balancer the CA's MTA route points at (TLS passes
//! through it untouched).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;

/// Copies a data directory (`cp -a`), as an operator makes a replica.
pub async fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let st = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .await?;
    anyhow::ensure!(st.success(), "cp -a {} {}", from.display(), to.display());
    Ok(())
}

/// The `host:port` of a service URL (`https://127.0.0.1:PORT`).
pub fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .split_once("://")
        .map(|(_, r)| r.trim_end_matches('/'))
        .context("service URL")?;
    Ok(hostport.parse()?)
}

/// A TCP proxy on 127.0.0.1 handing each new connection to the next of
/// `backends` in turn; gives its address. It runs until the runtime ends.
pub async fn round_robin(backends: Vec<SocketAddr>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(addr)
}
