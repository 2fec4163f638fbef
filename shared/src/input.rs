//! Bounded reads of what a user hands a CLI (a password line on stdin, a
//! PEM or DER file), so that `/dev/zero`, an endless pipe or a huge file
//! ends in a one-line error instead of a process growing without bound.

use std::io::{BufRead, Read};
use std::path::Path;

use zeroize::Zeroizing;

/// Longest password or passphrase line read from stdin or a file.
pub const MAX_LINE: usize = 4096;
/// Largest certificate, CSR, key or credential file read (1 MiB).
pub const MAX_FILE: u64 = 1 << 20;

/// Reads one line of at most [`MAX_LINE`] bytes (a password): the line
/// end (`\n` or `\r\n`) is not part of it. `what` names it in errors
/// ("the password on stdin is longer than 4096 bytes").
pub fn read_line(input: impl BufRead, what: &str) -> Result<Zeroizing<String>, String> {
    let mut buf = Zeroizing::new(Vec::new());
    input
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut buf)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    let mut line: &[u8] = &buf;
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l.strip_suffix(b"\r").unwrap_or(l);
    }
    if line.len() > MAX_LINE {
        return Err(format!("{what} is longer than {MAX_LINE} bytes"));
    }
    let text = std::str::from_utf8(line).map_err(|_| format!("{what} is not UTF-8 text"))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Reads a whole file of at most [`MAX_FILE`] bytes. A larger file (or an
/// endless one such as `/dev/zero`) is an `InvalidData` error saying so.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_FILE >> 20),
        ));
    }
    Ok(out)
}

/// [`read_file`] for a text file (PEM, JSON).
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_file(path)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text".to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_trimmed() {
        assert_eq!(*read_line(&b"s3cret\n"[..], "x").unwrap(), "s3cret");
        assert_eq!(*read_line(&b"s3cret\r\nmore"[..], "x").unwrap(), "s3cret");
        assert_eq!(*read_line(&b"a b "[..], "x").unwrap(), "a b ");
        let exact = format!("{}\r\n", "p".repeat(MAX_LINE));
        assert_eq!(read_line(exact.as_bytes(), "x").unwrap().len(), MAX_LINE);
        let long = "p".repeat(MAX_LINE + 1);
        assert_eq!(
            read_line(long.as_bytes(), "the password on stdin").unwrap_err(),
            "the password on stdin is longer than 4096 bytes"
        );
        // An endless input stops after the bound.
        let endless = std::io::BufReader::new(std::io::repeat(0));
        assert!(read_line(endless, "x").is_err());
        assert!(read_line(&[0xff, b'\n'][..], "x").is_err());
    }

    #[test]
    fn files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; MAX_FILE as usize]).unwrap();
        assert_eq!(read_file(&p).unwrap().len(), MAX_FILE as usize);
        std::fs::write(&p, vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        let e = read_file(&p).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "larger than 1 MiB");
        assert!(read_file(Path::new("/dev/zero")).is_err());
        std::fs::write(&p, [0xff]).unwrap();
        assert!(read_text(&p).is_err());
    }
}
