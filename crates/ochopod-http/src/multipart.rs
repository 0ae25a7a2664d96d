//! A small `multipart/form-data` reader (RFC 7578) for bodies already read into memory.
//!
//! The body is bounded by the server's `max_body` before it gets here, so the reader works on
//! one slice and copies each part once. Part headers are parsed by `httparse`.

/// One part of a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// The `name` of its `Content-Disposition`.
    pub(crate) name: String,
    /// The `filename` of its `Content-Disposition`, when given (file uploads have one).
    pub(crate) filename: Option<String>,
    /// The part's content.
    pub(crate) data: Vec<u8>,
}

/// Most headers one part may carry.
const MAX_PART_HEADERS: usize = 16;

/// The boundary of a `multipart/form-data` content type, or why there is none.
pub(crate) fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "content type {kind:?} is not multipart/form-data: send files as a multipart form"
        ));
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if v.is_empty() || v.len() > 70 {
                return Err(format!(
                    "multipart boundary {v:?} must be 1 to 70 characters long"
                ));
            }
            return Ok(v.to_string());
        }
    }
    Err("multipart/form-data without a boundary parameter".to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits `body` into its parts.
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let dash = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    // The first delimiter opens the body or follows a preamble's CRLF.
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        find(body, delim.as_bytes())
            .map(|i| i + delim.len())
            .ok_or_else(|| "multipart body without its opening boundary".to_string())?
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then CRLF.
        let pad = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        let rest = rest[pad..]
            .strip_prefix(b"\r\n")
            .ok_or_else(|| "multipart boundary not followed by CRLF".to_string())?;
        let head_start = body.len() - rest.len();
        let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
        let (head_len, headers) = match httparse::parse_headers(rest, &mut headers) {
            Ok(httparse::Status::Complete((n, h))) => (n, h),
            Ok(httparse::Status::Partial) => {
                return Err("multipart part headers end before their blank line".to_string())
            }
            Err(e) => return Err(format!("malformed multipart part headers: {e}")),
        };
        let content_start = head_start + head_len;
        let end = find(&body[content_start..], delim.as_bytes())
            .ok_or_else(|| "multipart body without its closing boundary".to_string())?;
        let data = body[content_start..content_start + end].to_vec();
        at = content_start + end + delim.len();
        let disposition = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-disposition"))
            .ok_or_else(|| "multipart part without Content-Disposition".to_string())?;
        let disposition = String::from_utf8_lossy(disposition.value);
        let (name, filename) = disposition_names(&disposition)?;
        parts.push(Part {
            name,
            filename,
            data,
        });
    }
}

/// `name` and `filename` of `form-data; name="..."; filename="..."`.
fn disposition_names(value: &str) -> Result<(String, Option<String>), String> {
    let value = value.trim();
    let Some(params) = value
        .get(..9)
        .filter(|k| k.eq_ignore_ascii_case("form-data"))
        .map(|_| &value[9..])
    else {
        return Err(format!(
            "Content-Disposition {value:?} is not form-data; name=\"...\""
        ));
    };
    let mut name = None;
    let mut filename = None;
    let mut rest = params;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        rest = rest
            .strip_prefix(';')
            .ok_or_else(|| format!("malformed Content-Disposition {value:?}"))?
            .trim_start();
        if rest.is_empty() {
            break;
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("malformed Content-Disposition {value:?}"))?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let (val, after) = if let Some(q) = rest.strip_prefix('"') {
            quoted(q).ok_or_else(|| format!("unterminated quote in {value:?}"))?
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            (rest[..end].trim().to_string(), &rest[end..])
        };
        rest = after;
        match key.as_str() {
            "name" => name = Some(val),
            "filename" => filename = Some(val),
            "name*" if name.is_none() => name = Some(ext_value(&val)?),
            "filename*" if filename.is_none() => filename = Some(ext_value(&val)?),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| format!("Content-Disposition {value:?} has no name"))?;
    Ok((name, filename))
}

/// A quoted string after its opening quote: its value (backslash escapes and the HTML5 form
/// `%22` undone) and what follows its closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out.replace("%22", "\""), &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// An RFC 5987 extended value, `UTF-8''percent%20encoded`.
fn ext_value(v: &str) -> Result<String, String> {
    let mut it = v.splitn(3, '\'');
    let charset = it.next().unwrap_or("");
    let _lang = it.next();
    let Some(text) = it.next() else {
        return Err(format!("malformed extended parameter {v:?}"));
    };
    if !charset.eq_ignore_ascii_case("utf-8") {
        return Err(format!("extended parameter {v:?}: only UTF-8 is supported"));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {v:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("extended parameter {v:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str, parts: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (disp, data) in parts {
            b.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n{data}\r\n").as_bytes(),
            );
        }
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        b
    }

    #[test]
    fn boundaries_come_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=x; boundary=\"a b\"").unwrap(),
            "a b"
        );
        for (bad, why) in [
            ("application/json", "not multipart/form-data"),
            ("multipart/form-data", "without a boundary"),
            ("multipart/form-data; boundary=", "1 to 70"),
        ] {
            assert!(boundary(bad).unwrap_err().contains(why), "{bad}");
        }
    }

    #[test]
    fn parts_with_names_files_and_binary_data() {
        let mut body = b"preamble\r\n".to_vec();
        body.extend(form(
            "XyZ",
            &[
                (
                    r#"form-data; name="conf/a.yml"; filename="conf/a.yml""#,
                    "a: 1",
                ),
                (r#"form-data; name="field""#, "plain"),
                (
                    r#"form-data; name="q\"x%22y"; filename="f""#,
                    "--XyZ inside\r\nstill",
                ),
                ("form-data; name*=UTF-8''%C3%A9t%C3%A9; filename=e", ""),
            ],
        ));
        let parts = parse(&body, "XyZ").unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].name, "conf/a.yml");
        assert_eq!(parts[0].filename.as_deref(), Some("conf/a.yml"));
        assert_eq!(parts[0].data, b"a: 1");
        assert_eq!(
            (parts[1].name.as_str(), &parts[1].filename),
            ("field", &None)
        );
        assert_eq!(parts[2].name, "q\"x\"y");
        assert_eq!(parts[2].data, b"--XyZ inside\r\nstill");
        assert_eq!(parts[3].name, "été");
        assert!(parts[3].data.is_empty());
        assert_eq!(parse(b"--b--\r\n", "b").unwrap(), vec![]);
    }

    proptest::proptest! {
        /// Any body, raw bytes or pieces of forms in any order, parses or names its problem.
        #[test]
        fn any_body_parses_or_errs_without_panicking(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            pieces in proptest::collection::vec(0usize..8, 0..24),
        ) {
            let _ = parse(&raw, "b");
            let bits: [&[u8]; 8] = [
                b"--b", b"\r\n", b"--", b"Content-Disposition: form-data; name=\"a\"",
                b"; filename=\"f\"", b"name*=UTF-8''%C3", b"\"", b"x",
            ];
            let body: Vec<u8> = pieces.iter().flat_map(|i| bits[*i].iter().copied()).collect();
            if let Ok(parts) = parse(&body, "b") {
                for p in parts {
                    proptest::prop_assert!(p.data.len() <= body.len());
                }
            }
        }
    }

    #[test]
    fn broken_forms_are_named() {
        for (body, why) in [
            (&b"nothing here"[..], "opening boundary"),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ndata",
                "closing boundary",
            ),
            (b"--bX", "not followed by CRLF"),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n",
                "blank line",
            ),
            (
                b"--b\r\nX-Other: 1\r\n\r\nd\r\n--b--",
                "without Content-Disposition",
            ),
            (
                b"--b\r\nContent-Disposition: attachment\r\n\r\nd\r\n--b--",
                "not form-data",
            ),
            (
                b"--b\r\nContent-Disposition: form-data; filename=x\r\n\r\nd\r\n--b--",
                "no name",
            ),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nd\r\n--b--",
                "unterminated",
            ),
        ] {
            let err = parse(body, "b").unwrap_err();
            assert!(
                err.contains(why),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
