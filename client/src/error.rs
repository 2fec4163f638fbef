//! The client's errors: each one reads as one clear line for the user.

use std::fmt;
use std::path::{Path, PathBuf};

/// Which service a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The MTA auth service.
    Mta,
    /// The certificate authority.
    Ca,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Mta => "MTA",
            Service::Ca => "CA",
        })
    }
}

/// Everything that can go wrong in the client. `Display` gives one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user gave something unusable (address, URL, option combination).
    #[error("{0}")]
    Invalid(String),

    /// No connection or no complete answer.
    #[error("cannot reach the {service} at {url}: {cause}")]
    Unreachable {
        service: Service,
        url: String,
        cause: String,
    },

    /// The service answered with an error (a problem document or a bare
    /// status).
    #[error("{service} refused {what}{} ({status}{})",
        if detail.is_empty() { String::new() } else { format!(": {detail}") },
        code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Refused {
        service: Service,
        /// What was refused, e.g. `the password for alice@example.com`.
        what: String,
        status: u16,
        /// The problem code, e.g. `totp-rejected`.
        code: Option<String>,
        detail: String,
    },

    /// The service answered 2xx with something the client cannot use.
    #[error("the {service} at {url} sent an answer mailid cannot use: {detail}")]
    BadAnswer {
        service: Service,
        url: String,
        detail: String,
    },

    /// A local file could not be read, written or understood.
    #[error("{}: {detail}", path.display())]
    File { path: PathBuf, detail: String },

    /// The identity was issued and stored, but the MTA did not publish it.
    #[error("{cause}; serial {serial} is issued and stored in {} (retry with: {retry})", dir.display())]
    NotPublished {
        serial: mailid_shared::Serial,
        dir: PathBuf,
        /// The command that retries the upload.
        retry: String,
        cause: Box<Error>,
    },

    /// The enrollment failed after step 5 had revoked the account's
    /// identity at its previous CA: the account has no valid identity until
    /// it enrolls again.
    #[error("{cause}; serial {serial} was already revoked at the previous CA {previous_ca} (step 5), so {account} has no valid identity now: enroll again ({retry})")]
    EnrollAfterRevocation {
        account: mailid_shared::Address,
        serial: mailid_shared::Serial,
        previous_ca: String,
        /// The command that enrolls again.
        retry: String,
        cause: Box<Error>,
    },

    /// Key generation, CSR building or key decoding failed.
    #[error("{0}")]
    Crypto(String),
}

impl Error {
    /// A file error with the OS reason in lower case.
    pub fn io(path: &Path, e: &std::io::Error) -> Self {
        Error::File {
            path: path.to_path_buf(),
            detail: io_reason(e),
        }
    }

    /// A file error with a free-text reason.
    pub fn file(path: &Path, detail: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// The problem code of a refusal, if any.
    pub fn problem_code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of a refusal, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An OS error as short lower-case text, e.g. `no such file or directory`.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // Drop the " (os error N)" suffix; keep the words.
    let words = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut out = words.to_string();
    if let Some(first) = out.get(0..1) {
        let lower = first.to_ascii_lowercase();
        out.replace_range(0..1, &lower);
    }
    out
}

/// Shorthand for the client's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reads_as_one_line() {
        let e = Error::Refused {
            service: Service::Mta,
            what: "the password for alice@example.com".into(),
            status: 401,
            code: Some("unauthorized".into()),
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "MTA refused the password for alice@example.com (401 unauthorized)"
        );
        let e = Error::Refused {
            service: Service::Ca,
            what: "the enrollment".into(),
            status: 403,
            code: Some("totp-rejected".into()),
            detail: "the code was replayed".into(),
        };
        assert_eq!(
            e.to_string(),
            "CA refused the enrollment: the code was replayed (403 totp-rejected)"
        );
    }

    #[test]
    fn io_reasons_are_lower_case_without_os_error() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "no such file or directory");
    }
}
