//! Command-line conventions shared by the three binaries (SPEC §3): errors
//! are one line on stderr, prefixed with the binary's name; a usage error
//! exits with status 2; `--help` and `--version` go to stdout.

use std::fmt::Display;

/// Parses the command line into `C`; on a usage error prints one line and
/// exits with status 2 (see [`usage_exit`]).
pub fn parse_or_exit<C: clap::Parser>(bin: &str) -> C {
    match C::try_parse() {
        Ok(c) => c,
        Err(e) => usage_exit(bin, &e),
    }
}

/// Reports a clap error the SPEC §3 way and exits: help and version text to
/// stdout with status 0; anything else as one line on stderr with status 2.
pub fn usage_exit(bin: &str, e: &clap::Error) -> ! {
    if !e.use_stderr() {
        let _ = e.print();
        std::process::exit(0);
    }
    let line = match e.kind() {
        // Nothing but the program name (or a bare group such as `account`):
        // clap would print the whole help here.
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "a command is required (see --help)".to_string()
        }
        _ => one_line(&e.render().to_string()),
    };
    error_line(bin, line);
    std::process::exit(2);
}

/// A clap value parser for serial-number arguments: a malformed serial is
/// a usage error (exit 2); the text is kept as given.
pub fn serial_arg(text: &str) -> Result<String, String> {
    text.parse::<crate::Serial>()
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// Prints `BIN: MESSAGE` on stderr as one line (newlines in the message
/// become spaces). Never panics, even when stderr is closed.
pub fn error_line(bin: &str, msg: impl Display) {
    use std::io::Write;
    let msg = msg.to_string().replace(['\r', '\n'], " ");
    let _ = writeln!(std::io::stderr(), "{bin}: {msg}");
}

/// Folds clap's rendered error (message, usage block, hint) into one line:
/// the message lines, without the `error:` tag, tips, the usage and the hint.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !l.starts_with("Usage:")
                && !l.starts_with("For more information")
                && !l.starts_with("tip:")
        })
        .collect();
    let text = parts.join(" ");
    let text = text.strip_prefix("error:").unwrap_or(&text).trim();
    format!("{text} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn clap_errors_fold_into_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  \
                        --name <NAME>\n\nUsage: mailid-ca init --name <NAME>\n\n\
                        For more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: --name <NAME> (see --help)"
        );
        let tip =
            "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, \
                   use '-- --bogus'\n\nUsage: x [OPTIONS]\n\nFor more information, try '--help'.\n";
        let line = one_line(tip);
        assert!(!line.contains('\n'));
        assert_eq!(line, "unexpected argument '--bogus' found (see --help)");
    }
}
