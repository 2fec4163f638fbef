//! Problem documents for the errors hyper answers by itself.
//!
//! When a request cannot be parsed at all (a garbage request line, an
//! unknown HTTP version, a malformed header, headers over the buffer limit)
//! hyper writes an answer of its own before any handler runs: a `400` or
//! `431` head with `connection: close`, `content-length: 0` and no body.
//! SPEC §3 wants every error to be a problem document, also those a
//! framework produces by itself, and hyper has no hook for these answers.
//! [`ProblemOnParseError`] wraps the connection's I/O and rewrites exactly
//! such a head, on its way out, into a `400 bad-request` problem document.
//!
//! Nothing the services answer themselves can match: every error they send
//! is a problem document with a body (a non-zero `content-length`, also for
//! `HEAD`), and their bodiless answers (`304`) are not 4xx.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::problem::Problem;

/// The longest head hyper writes for its own errors is well under this.
const MAX_ERROR_HEAD: usize = 512;

/// I/O wrapper that turns hyper's bodiless parse-error answers into
/// problem documents; everything else passes through untouched.
pub struct ProblemOnParseError<S> {
    inner: S,
    /// A replacement being written, how much of it is out, and the length
    /// of the original write it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> ProblemOnParseError<S> {
    pub fn new(inner: S) -> Self {
        ProblemOnParseError {
            inner,
            pending: None,
        }
    }
}

/// The replacement for `head` if it is one of hyper's own error answers.
pub fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > MAX_ERROR_HEAD
        || !head.starts_with(b"HTTP/1.1 4")
        || !head.ends_with(b"\r\n\r\n")
    {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 4")?;
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n")
        || !lower.contains("\r\nconnection: close\r\n")
        || lower.contains("\r\ncontent-type:")
    {
        return None;
    }
    let detail = match rest.get(..2) {
        Some("31") => "the request's header fields are too large",
        _ => "the request is not valid HTTP/1.1",
    };
    let body = serde_json::to_vec(&Problem::bad_request(detail).document()).ok()?;
    let date = text
        .split("\r\n")
        .find(|l| l.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("date: ")));
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(d) = date {
        out.push_str(d);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncWrite + Unpin> ProblemOnParseError<S> {
    /// Writes the pending replacement; `Ready(Ok(n))` with the original
    /// write's length once all of it is out.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((buf, done, orig)) = self.pending.as_mut() {
            if *done == buf.len() {
                let n = *orig;
                self.pending = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]) {
                Poll::Ready(Ok(0)) => {
                    self.pending = None;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => {
                    self.pending = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncWrite + Unpin> ProblemOnParseError<S> {
    /// Writes out a pending replacement, if any, before a flush or shutdown.
    fn finish_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_none() {
            return Poll::Ready(Ok(()));
        }
        self.drive(cx).map_ok(|_| ())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemOnParseError<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemOnParseError<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match replacement(buf) {
                Some(r) => self.pending = Some((r, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.drive(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            // Only a short write that starts like a 4xx head is looked at.
            let maybe = bufs.first().is_some_and(|b| b.starts_with(b"HTTP/1.1 4"));
            let candidate = (maybe && total <= MAX_ERROR_HEAD).then(|| {
                bufs.iter()
                    .flat_map(|b| b.iter().copied())
                    .collect::<Vec<u8>>()
            });
            match candidate.as_deref().and_then(replacement) {
                Some(r) => self.pending = Some((r, 0, total)),
                None => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        self.drive(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.finish_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.finish_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::replacement;

    const HYPER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 03:38:16 GMT\r\n\r\n";

    #[test]
    fn hypers_own_errors_become_problem_documents() {
        let out = String::from_utf8(replacement(HYPER_400).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains("date: Mon, 23 Nov 2026 03:38:16 GMT"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let doc: crate::ProblemDocument = serde_json::from_str(body).unwrap();
        assert_eq!(doc.status, 400);
        assert_eq!(doc.type_uri, "urn:mailid:error:bad-request");
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(replacement(big).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(out.contains("too large"));
    }

    #[test]
    fn everything_else_passes_through() {
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: 97\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n{\"partial\"",
            b"{\"type\":\"urn:mailid:error:bad-request\"}",
        ] {
            assert!(replacement(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
