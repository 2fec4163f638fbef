//! PKCS#11 URIs (RFC 7512) naming the CA key: which module, token and key
//! pair, and where the PIN comes from. A small parser of our own: the
//! grammar is a handful of `name=value` pairs with percent-encoding, and
//! the parsed URI must never show its PIN (Display and Debug leave
//! `pin-value` out), which a general URI type would not promise.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// Environment variable that may hold the token PIN.
pub const PIN_ENV: &str = "MAILID_PKCS11_PIN";

/// Characters left as they are in a written URI's path values (RFC 3986
/// unreserved); everything else is percent-encoded.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Query values may also hold `/` and `:` as they are (a module path).
const QUERY_KEEP: &AsciiSet = &PATH_KEEP.remove(b'/').remove(b':');

/// A parsed `pkcs11:` URI.
#[derive(Clone, Default)]
pub struct KeyUri {
    /// The token's label (`token=`).
    pub token: String,
    /// The key pair's label (`object=`, CKA_LABEL).
    pub object: String,
    /// The key pair's CKA_ID (`id=`), when given.
    pub id: Option<Vec<u8>>,
    /// The PKCS#11 module (`module-path=`).
    pub module_path: PathBuf,
    /// A file whose first line is the PIN (`pin-source=file:…`).
    pub pin_source: Option<PathBuf>,
    pin_value: Option<Zeroizing<String>>,
}

fn decode_text(what: &str, v: &str) -> anyhow::Result<String> {
    let text = percent_decode_str(v)
        .decode_utf8()
        .map_err(|_| anyhow::anyhow!("the key URI's {what} is not UTF-8"))?;
    Ok(text.into_owned())
}

fn set<T>(slot: &mut Option<T>, what: &str, v: T) -> anyhow::Result<()> {
    if slot.replace(v).is_some() {
        anyhow::bail!("the key URI gives {what} twice");
    }
    Ok(())
}

impl KeyUri {
    /// Parses `pkcs11:token=…;object=…[;id=…][;type=private]?module-path=…
    /// [&pin-source=file:…][&pin-value=…]`. Errors never quote a PIN.
    pub fn parse(text: &str) -> anyhow::Result<KeyUri> {
        let rest = text
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &text[7..])
            .ok_or_else(|| anyhow::anyhow!("the key URI must start with 'pkcs11:'"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut id) = (None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("key URI attribute '{attr}' has no '='"))?;
            match k {
                "token" => set(&mut token, "token", decode_text("token", v)?)?,
                "object" => set(&mut object, "object", decode_text("object", v)?)?,
                "id" => set(&mut id, "id", percent_decode_str(v).collect::<Vec<u8>>())?,
                "type" if matches!(v, "private" | "public") => {}
                "type" => anyhow::bail!("the key URI's type must be 'private', not '{v}'"),
                other => anyhow::bail!("the key URI attribute '{other}' is not supported"),
            }
        }
        let (mut module, mut source, mut value) = (None, None, None);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k {
                "module-path" => set(&mut module, "module-path", decode_text("module-path", v)?)?,
                "pin-source" => set(&mut source, "pin-source", decode_text("pin-source", v)?)?,
                "pin-value" => {
                    let pin = Zeroizing::new(
                        percent_decode_str(v)
                            .decode_utf8()
                            .map_err(|_| anyhow::anyhow!("the key URI's pin-value is not UTF-8"))?
                            .into_owned(),
                    );
                    set(&mut value, "pin-value", pin)?
                }
                other => anyhow::bail!("the key URI query attribute '{other}' is not supported"),
            }
        }
        let pin_source = source
            .map(|s| {
                let path = s.strip_prefix("file:").unwrap_or(&s);
                // file:///x and file:/x both name /x.
                let path = path.strip_prefix("//").unwrap_or(path);
                if !path.starts_with('/') {
                    anyhow::bail!("the key URI's pin-source must be file:/absolute/path");
                }
                Ok(PathBuf::from(path))
            })
            .transpose()?;
        let uri = KeyUri {
            token: token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| anyhow::anyhow!("the key URI names no token (token=…)"))?,
            object: object
                .filter(|o| !o.is_empty())
                .ok_or_else(|| anyhow::anyhow!("the key URI names no key (object=…)"))?,
            id,
            module_path: module
                .filter(|m| !m.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    anyhow::anyhow!("the key URI names no PKCS#11 module (?module-path=…)")
                })?,
            pin_source,
            pin_value: value,
        };
        Ok(uri)
    }

    /// The URI as recorded in the configuration: as [`fmt::Display`]
    /// writes it, without `pin-value`.
    pub fn recorded(&self) -> String {
        self.to_string()
    }

    /// The PIN: `pin-value`, else the first line of the `pin-source` file,
    /// else [`PIN_ENV`].
    pub fn pin(&self) -> anyhow::Result<Zeroizing<String>> {
        if let Some(v) = &self.pin_value {
            return Ok(v.clone());
        }
        if let Some(f) = &self.pin_source {
            let text = Zeroizing::new(
                mailid_shared::input::read_text(f)
                    .map_err(|e| anyhow::anyhow!("reading the PIN file {}: {e}", f.display()))?,
            );
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() {
                anyhow::bail!("the PIN file {} is empty", f.display());
            }
            return Ok(Zeroizing::new(line.to_string()));
        }
        match std::env::var(PIN_ENV) {
            Ok(v) if !v.is_empty() => Ok(Zeroizing::new(v)),
            _ => anyhow::bail!(
                "no PIN for token '{}': give pin-source or pin-value in the key URI, or set {PIN_ENV}",
                self.token
            ),
        }
    }
}

impl fmt::Display for KeyUri {
    /// The URI without `pin-value` (never shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |s: &str| utf8_percent_encode(s, PATH_KEEP).to_string();
        let q = |s: &str| utf8_percent_encode(s, QUERY_KEEP).to_string();
        write!(
            f,
            "pkcs11:token={};object={}",
            p(&self.token),
            p(&self.object)
        )?;
        if let Some(id) = &self.id {
            f.write_str(";id=")?;
            for b in id {
                write!(f, "%{b:02X}")?;
            }
        }
        write!(f, "?module-path={}", q(&self.module_path.to_string_lossy()))?;
        if let Some(s) = &self.pin_source {
            write!(f, "&pin-source=file:{}", q(&s.to_string_lossy()))?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyUri({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_never_shows_the_pin() {
        let u = KeyUri::parse(
            "pkcs11:token=mail%20id;object=ca-key;id=%01%ff;type=private\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=s%65cret",
        )
        .unwrap();
        assert_eq!(u.token, "mail id");
        assert_eq!(u.object, "ca-key");
        assert_eq!(u.id.as_deref(), Some(&[1u8, 0xff][..]));
        assert_eq!(u.pin().unwrap().as_str(), "secret");
        let shown = format!("{u} {u:?} {}", u.recorded());
        assert!(
            !shown.contains("secret") && !shown.contains("s%65cret"),
            "{shown}"
        );
        assert_eq!(
            u.to_string(),
            "pkcs11:token=mail%20id;object=ca-key;id=%01%FF?module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
        // What is recorded parses back to the same key.
        let again = KeyUri::parse(&u.recorded()).unwrap();
        assert_eq!(
            (again.token, again.object, again.id),
            (u.token, u.object, u.id)
        );
    }

    #[test]
    fn pin_order_is_value_then_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "from-file\nignored\n").unwrap();
        let base = "pkcs11:token=t;object=k?module-path=/m.so";
        let both = format!("{base}&pin-source=file:{}&pin-value=v", f.display());
        assert_eq!(KeyUri::parse(&both).unwrap().pin().unwrap().as_str(), "v");
        let file = format!("{base}&pin-source=file://{}", f.display());
        let u = KeyUri::parse(&file).unwrap();
        assert_eq!(u.pin().unwrap().as_str(), "from-file");
        assert!(u.to_string().contains("pin-source=file:/"));
        // Without either, MAILID_PKCS11_PIN (the test does not set it).
        if std::env::var(PIN_ENV).is_err() {
            let e = KeyUri::parse(base).unwrap().pin().unwrap_err();
            assert!(e.to_string().contains(PIN_ENV), "{e}");
        }
    }

    #[test]
    fn refuses_bad_uris() {
        for bad in [
            "",
            "pkcs12:token=t;object=k?module-path=/m.so",
            "pkcs11:object=k?module-path=/m.so",
            "pkcs11:token=t?module-path=/m.so",
            "pkcs11:token=t;object=k",
            "pkcs11:token=t;token=u;object=k?module-path=/m.so",
            "pkcs11:token=t;object=k;serial=1?module-path=/m.so",
            "pkcs11:token=t;object=k;type=cert?module-path=/m.so",
            "pkcs11:token=t;object=k?module-path=/m.so&module-name=x",
            "pkcs11:token=t;object=k?module-path=/m.so&pin-source=relative",
            "pkcs11:token=%ff;object=k?module-path=/m.so",
            "pkcs11:token;object=k?module-path=/m.so",
        ] {
            assert!(KeyUri::parse(bad).is_err(), "{bad}");
        }
        let e = KeyUri::parse("pkcs11:token=t;object=k;x=1?module-path=/m&pin-value=hunter2")
            .unwrap_err();
        assert!(!format!("{e:#}").contains("hunter2"));
    }
}
