//! RFC 7512 PKCS#11 URIs, the subset a key needs:
//! `pkcs11:token=LABEL;object=LABEL[;id=%01%02][;type=private]` and the
//! query `?module-path=PATH&pin-source=file:PATH` or `&pin-value=PIN`.
//! Values are percent-decoded; an attribute this parser does not know is
//! refused, never ignored, so a URI is never read as naming another key.

use std::path::PathBuf;

/// A key's PKCS#11 URI.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token's label.
    pub token: String,
    /// `object`: the key's label (`CKA_LABEL`).
    pub object: String,
    /// `id`: the key's `CKA_ID`, if given.
    pub id: Option<Vec<u8>>,
    /// `module-path`: the module to load.
    pub module_path: Option<PathBuf>,
    /// `pin-source=file:PATH`: a file holding the user PIN.
    pub pin_source: Option<PathBuf>,
    /// `pin-value`: the user PIN itself (for tests; prefer a file).
    pub pin_value: Option<String>,
}

impl std::fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Uri")
            .field("token", &self.token)
            .field("object", &self.object)
            .field("module_path", &self.module_path)
            .field("pin_value", &self.pin_value.as_ref().map(|_| "(redacted)"))
            .finish_non_exhaustive()
    }
}

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the PKCS#11 URI is refused: {0} (expected pkcs11:token=T;object=K?module-path=M&pin-source=file:P)")]
pub struct UriError(pub String);

/// The longest URI read.
const MAX_URI: usize = 4096;

fn decode(field: &str, value: &str) -> Result<Vec<u8>, UriError> {
    // Every '%' must start a two-hex-digit escape.
    let bytes = value.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let escaped =
            bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if *b == b'%' && !escaped {
            return Err(UriError(format!("{field}: a '%' that is not followed by two hex digits")));
        }
    }
    Ok(percent_encoding::percent_decode_str(value).collect())
}

fn text(field: &str, value: &str) -> Result<String, UriError> {
    String::from_utf8(decode(field, value)?).map_err(|_| UriError(format!("{field} is not UTF-8")))
}

impl Pkcs11Uri {
    /// Parses a URI's text.
    pub fn parse(s: &str) -> Result<Pkcs11Uri, UriError> {
        if s.len() > MAX_URI {
            return Err(UriError(format!("it is over {MAX_URI} bytes")));
        }
        let rest = s.strip_prefix("pkcs11:").ok_or_else(|| UriError("it does not start with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut id, mut kind) = (None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| UriError(format!("{attr:?} has no '='")))?;
            let slot = match name {
                "token" => &mut token,
                "object" => &mut object,
                "type" => &mut kind,
                "id" => {
                    if id.replace(decode("id", value)?).is_some() {
                        return Err(UriError("id is given twice".into()));
                    }
                    continue;
                }
                other => return Err(UriError(format!("unknown path attribute {other:?}"))),
            };
            if slot.replace(text(name, value)?).is_some() {
                return Err(UriError(format!("{name} is given twice")));
            }
        }
        let (mut module_path, mut pin_source, mut pin_value) = (None, None, None);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| UriError(format!("{attr:?} has no '='")))?;
            let value = text(name, value)?;
            let slot = match name {
                "module-path" => &mut module_path,
                "pin-source" => &mut pin_source,
                "pin-value" => &mut pin_value,
                other => return Err(UriError(format!("unknown query attribute {other:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(UriError(format!("{name} is given twice")));
            }
        }
        if let Some(k) = kind
            && k != "private"
        {
            return Err(UriError(format!("type={k}: a signing key is type=private")));
        }
        let pin_source = match pin_source {
            None => None,
            Some(p) => Some(PathBuf::from(
                p.strip_prefix("file:").ok_or_else(|| UriError("pin-source must be file:PATH".into()))?,
            )),
        };
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| UriError("it names no token=".into()))?;
        let object = object.filter(|o| !o.is_empty()).ok_or_else(|| UriError("it names no object=".into()))?;
        Ok(Pkcs11Uri { token, object, id, module_path: module_path.map(PathBuf::from), pin_source, pin_value })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_uri_parses_with_its_module_and_pin_source() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=covenant;object=decision%20key;id=%01%ff;type=private\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/covenant/pin",
        )
        .unwrap();
        assert_eq!(u.token, "covenant");
        assert_eq!(u.object, "decision key");
        assert_eq!(u.id, Some(vec![1, 0xff]));
        assert_eq!(u.module_path, Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")));
        assert_eq!(u.pin_source, Some(PathBuf::from("/etc/covenant/pin")));
        assert!(!format!("{:?}", Pkcs11Uri::parse("pkcs11:token=t;object=o?pin-value=1234").unwrap()).contains("1234"));
    }

    #[test]
    fn what_a_key_uri_cannot_be_is_refused() {
        for (bad, says) in [
            ("token=t;object=o", "pkcs11:"),
            ("pkcs11:object=o", "no token"),
            ("pkcs11:token=t", "no object"),
            ("pkcs11:token=t;object=o;slot-id=3", "unknown path attribute"),
            ("pkcs11:token=t;object=o?pin=1", "unknown query attribute"),
            ("pkcs11:token=t;token=u;object=o", "twice"),
            ("pkcs11:token=t;object=o;type=public", "type=private"),
            ("pkcs11:token=t;object=o?pin-source=/etc/pin", "file:PATH"),
            ("pkcs11:token=t%zz;object=o", "two hex digits"),
            ("pkcs11:token=t;object=o%", "two hex digits"),
            ("pkcs11:token=%ff;object=o", "UTF-8"),
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Pkcs11Uri::parse(&format!("pkcs11:token={};object=o", "t".repeat(5000))).is_err());
    }
}
