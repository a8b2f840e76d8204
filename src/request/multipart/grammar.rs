//! The grammar around the parts: the content type's `boundary` parameter and a part's
//! `Content-Disposition`, both RFC 9110 parameter lists (`;`-separated `name=value`, names
//! compared without case, values a token or a quoted string).

use super::{Malformed, MultipartError, MAX_BOUNDARY_BYTES, MODEL_FIELD};

fn content_type_error(what: &'static str) -> MultipartError {
    MultipartError::Malformed {
        offset: 0,
        kind: Malformed::Boundary(what),
    }
}

/// The boundary of a `multipart/form-data` content type; `Ok(None)` for any other media
/// type. Parameters are `;`-separated `name=value` pairs, names compared without case,
/// values a token or a quoted string (RFC 9110 §5.6.6).
pub fn boundary(content_type: &[u8]) -> Result<Option<Vec<u8>>, MultipartError> {
    let (media_type, mut rest) = match content_type.iter().position(|&b| b == b';') {
        Some(at) => (&content_type[..at], &content_type[at..]),
        None => (content_type, &b""[..]),
    };
    if !media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
    {
        return Ok(None);
    }
    let mut boundary = None;
    loop {
        rest = rest.trim_ascii_start();
        let Some(after) = rest.strip_prefix(b";") else {
            if rest.is_empty() {
                break;
            }
            return Err(content_type_error("cannot be read: bad parameter syntax"));
        };
        rest = after.trim_ascii_start();
        if rest.is_empty() {
            break;
        }
        let name_len = rest.iter().take_while(|&&b| is_token(b)).count();
        let (name, after) = rest.split_at(name_len);
        let after = after
            .strip_prefix(b"=")
            .filter(|_| name_len > 0)
            .ok_or_else(|| content_type_error("cannot be read: bad parameter syntax"))?;
        let parameter = parameter_value(after)
            .ok_or_else(|| content_type_error("cannot be read: bad parameter value"))?;
        rest = parameter.rest;
        if name.eq_ignore_ascii_case(b"boundary") {
            if boundary.is_some() {
                return Err(content_type_error("is given twice"));
            }
            boundary = Some(parameter.value);
        }
    }
    let boundary = boundary.ok_or_else(|| content_type_error("is missing"))?;
    let valid_chars = boundary.iter().all(|&b| is_bchar(b));
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY_BYTES
        || !valid_chars
        || boundary.ends_with(b" ")
    {
        return Err(content_type_error(
            "must be 1 to 70 of RFC 2046's characters, not ending with a space",
        ));
    }
    Ok(Some(boundary))
}

/// A parameter value read from the start of `text`.
struct ParameterValue<'a> {
    /// The token, or the quoted string's content unescaped.
    value: Vec<u8>,
    /// The quoted string had backslash escapes.
    escaped: bool,
    rest: &'a [u8],
}

/// A parameter value at the start of `text`, a token or a quoted string; `None` when it is
/// neither.
fn parameter_value(text: &[u8]) -> Option<ParameterValue<'_>> {
    let Some(quoted) = text.strip_prefix(b"\"") else {
        let len = text.iter().take_while(|&&b| is_token(b)).count();
        return (len > 0).then(|| ParameterValue {
            value: text[..len].to_vec(),
            escaped: false,
            rest: &text[len..],
        });
    };
    let mut value = Vec::new();
    let mut escaped = false;
    let mut bytes = quoted.iter().enumerate();
    while let Some((at, &byte)) = bytes.next() {
        match byte {
            b'"' => {
                return Some(ParameterValue {
                    value,
                    escaped,
                    rest: &quoted[at + 1..],
                })
            }
            b'\\' => {
                escaped = true;
                value.push(*bytes.next()?.1);
            }
            b'\r' | b'\n' | 0 => return None,
            _ => value.push(byte),
        }
    }
    None
}

/// RFC 9110 `tchar`.
pub(super) fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 2046 `bchars`.
fn is_bchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&byte)
}

/// Reads a `Content-Disposition` value: whether it is `form-data` named `model`.
pub(super) fn disposition_names_model(value: &[u8]) -> Result<bool, Malformed> {
    let type_len = value.iter().take_while(|&&b| is_token(b)).count();
    if !value[..type_len].eq_ignore_ascii_case(b"form-data") {
        return Err(Malformed::Disposition("is not form-data"));
    }
    let mut rest = &value[type_len..];
    let mut name = None;
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            break;
        }
        let after = rest
            .strip_prefix(b";")
            .ok_or(Malformed::Disposition("cannot be read"))?
            .trim_ascii_start();
        let param_len = after.iter().take_while(|&&b| is_token(b)).count();
        let (param, after) = after.split_at(param_len);
        let after = after
            .trim_ascii_start()
            .strip_prefix(b"=")
            .filter(|_| param_len > 0)
            .ok_or(Malformed::Disposition("cannot be read"))?
            .trim_ascii_start();
        let parameter = parameter_value(after).ok_or(Malformed::Disposition("cannot be read"))?;
        rest = parameter.rest;
        if param.eq_ignore_ascii_case(b"name*") {
            return Err(Malformed::Disposition("has a name* parameter"));
        }
        if param.eq_ignore_ascii_case(b"name") {
            if name.is_some() {
                return Err(Malformed::Disposition("has two names"));
            }
            // Parsers differ on backslashes in quoted strings (RFC 7578 leaves them out):
            // a name another parser could read differently is refused.
            if parameter.escaped {
                return Err(Malformed::Disposition("has a backslash in its name"));
            }
            name = Some(parameter.value);
        }
    }
    let name = name.ok_or(Malformed::Disposition("has no name"))?;
    Ok(name == MODEL_FIELD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        let ok = |content_type: &str| {
            boundary(content_type.as_bytes())
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(
            ok("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            ok("Multipart/Form-Data ;charset=utf-8; BOUNDARY=\"a b:c=d?\"").as_deref(),
            Some("a b:c=d?")
        );
        assert_eq!(
            ok("multipart/form-data; boundary=\"a\\bc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(
            ok(&format!("multipart/form-data;boundary={}", "b".repeat(70))).map(|b| b.len()),
            Some(70)
        );
        for other in [
            "application/json",
            "",
            "multipart/mixed; boundary=a",
            "text/plain",
        ] {
            assert_eq!(ok(other), None, "{other}");
        }
        for bad in [
            "multipart/form-data",
            "multipart/form-data; charset=utf-8",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"\"",
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=\"a \"",
            "multipart/form-data; boundary=\"a\"b",
            "multipart/form-data; boundary=\"a",
            "multipart/form-data; boundary=a{b",
            "multipart/form-data; boundary=\"a\rb\"",
            "multipart/form-data; =a",
        ] {
            assert!(
                matches!(
                    boundary(bad.as_bytes()),
                    Err(MultipartError::Malformed {
                        offset: 0,
                        kind: Malformed::Boundary(_)
                    })
                ),
                "{bad}"
            );
        }
        let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        assert!(boundary(long.as_bytes()).is_err());
    }

    #[test]
    fn dispositions_name_their_field_once_and_plainly() {
        let names_model = |value: &str| disposition_names_model(value.as_bytes());
        assert_eq!(names_model("form-data; name=\"model\""), Ok(true));
        assert_eq!(
            names_model("Form-Data ; filename=\"a\\\"b\" ; NAME = model"),
            Ok(true)
        );
        assert_eq!(
            names_model("form-data; name=file; filename=model"),
            Ok(false)
        );
        assert_eq!(names_model("form-data; name=\"Model\""), Ok(false));
        assert_eq!(
            names_model("form-data; name=\"mo\\del\""),
            Err(Malformed::Disposition("has a backslash in its name"))
        );
        assert_eq!(
            names_model("form-data;"),
            Err(Malformed::Disposition("cannot be read"))
        );
    }
}
