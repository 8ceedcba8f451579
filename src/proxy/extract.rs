//! Reading what a decision needs from a request: the token, the row count, the recipients.
//!
//! Pure: no I/O. Each reader refuses what another parser could read differently: two tokens,
//! a repeated or bracketed row parameter, a recipient field of an unexpected type.

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName};
use serde_json::Value;

use super::canonical::{decode_form_bytes, decode_query_component};
use super::error::ProxyError;
use crate::token::MAX_TOKEN_LEN;

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHeader {
    /// `Authorization: Bearer …` (removed before forwarding).
    Bearer,
    /// `X-Act-Token: …` (removed before forwarding; a non-Bearer `Authorization` is passed on).
    ActToken,
}

/// Header carrying the token when `Authorization` is the upstream's own.
pub const ACT_TOKEN: HeaderName = HeaderName::from_static("x-act-token");

/// The presented token: exactly one of `Authorization: Bearer` and `X-Act-Token`, once.
pub fn token(headers: &HeaderMap) -> Result<Option<(&str, TokenHeader)>, ProxyError> {
    let mut auth = headers.get_all(AUTHORIZATION).iter();
    let bearer = match (auth.next(), auth.next()) {
        (Some(_), Some(_)) => {
            return Err(ProxyError::bad_request(
                "Authorization appears more than once",
            ));
        }
        (Some(v), None) => {
            let v = v
                .to_str()
                .map_err(|_| ProxyError::bad_request("Authorization is not visible ASCII"))?;
            let is_bearer = v.len() >= 6 && v[..6].eq_ignore_ascii_case("bearer");
            match v.split_once([' ', '\t']) {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
                _ if is_bearer => {
                    return Err(ProxyError::bad_request(
                        "Authorization must be `Bearer <token>`",
                    ));
                }
                _ => None,
            }
        }
        _ => None,
    };
    let mut act = headers.get_all(ACT_TOKEN).iter();
    let header = match (act.next(), act.next()) {
        (Some(_), Some(_)) => {
            return Err(ProxyError::bad_request(
                "X-Act-Token appears more than once",
            ));
        }
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| ProxyError::bad_request("X-Act-Token is not visible ASCII"))?
                .trim(),
        ),
        _ => None,
    };
    let found = match (bearer, header) {
        (Some(_), Some(_)) => {
            return Err(ProxyError::bad_request(
                "send the token once: Authorization: Bearer or X-Act-Token, not both",
            ));
        }
        (Some(t), None) => Some((t, TokenHeader::Bearer)),
        (None, Some(t)) => Some((t, TokenHeader::ActToken)),
        (None, None) => None,
    };
    match found {
        Some((t, _)) if t.is_empty() || t.len() > MAX_TOKEN_LEN || t.contains(' ') => Err(
            ProxyError::bad_request("the token header is empty, too long or contains spaces"),
        ),
        other => Ok(other),
    }
}

/// Refuses a request that carries its token anywhere but the one header it was read from:
/// another header (which would be forwarded) or the query string (which upstreams log).
pub fn token_elsewhere(
    headers: &HeaderMap,
    query: Option<&str>,
    token: &str,
    from: TokenHeader,
) -> Result<(), ProxyError> {
    let source = match from {
        TokenHeader::Bearer => AUTHORIZATION.as_str(),
        TokenHeader::ActToken => "x-act-token",
    };
    // Only a value at least as long as the token can hold it; most requests have none, and
    // then no searcher is built (building one for a ~330-byte needle is most of the cost).
    let mut finder = None;
    let mut holds = |value: &[u8]| {
        value.len() >= token.len()
            && finder
                .get_or_insert_with(|| memchr::memmem::Finder::new(token.as_bytes()))
                .find(value)
                .is_some()
    };
    let elsewhere = headers
        .iter()
        .filter(|(name, _)| name.as_str() != source)
        .any(|(_, value)| holds(value.as_bytes()));
    let elsewhere = elsewhere || query.is_some_and(|q| holds(q.as_bytes()));
    if elsewhere {
        return Err(ProxyError::bad_request(
            "the capability token appears outside its header; send it once, in Authorization: Bearer or X-Act-Token",
        ));
    }
    Ok(())
}

/// The row count a request asks for through the query parameter `name`. Only the exact
/// raw key counts; a key that some upstream could read as the same parameter — another letter
/// case (`LIMIT`), percent-encoded (`l%69mit`), bracketed (`limit[]`), padded — is refused, as
/// are a repeated parameter and a value that is not a plain non-negative integer. A method
/// override (`_method`) is refused too.
pub fn rows(query: Option<&str>, name: &str) -> Result<Option<u64>, ProxyError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found: Option<u64> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key =
            decode_query_component(raw_key).map_err(|e| ProxyError::bad_request(e.to_string()))?;
        let base = key.split('[').next().unwrap_or_default().trim();
        if !base.eq_ignore_ascii_case(name) {
            continue;
        }
        if raw_key != name {
            return Err(ProxyError::bad_request(format!(
                "query parameter {key:?} is ambiguous; send `{name}` exactly, once, as a plain number"
            )));
        }
        if found.is_some() {
            return Err(ProxyError::bad_request(format!(
                "query parameter `{name}` appears more than once"
            )));
        }
        let value =
            decode_query_component(v).map_err(|e| ProxyError::bad_request(e.to_string()))?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 18 {
            return Err(ProxyError::bad_request(format!(
                "query parameter `{name}` must be a non-negative whole number"
            )));
        }
        found = Some(value.parse().map_err(|_| {
            ProxyError::bad_request(format!("query parameter `{name}` is out of range"))
        })?);
    }
    Ok(found)
}

/// Refuses query parameters that some upstream frameworks read as something else than the
/// request line says: a method override (`_method`), or — on a route whose recipients come
/// from the JSON body — a parameter named like a recipient field (Rails and Laravel merge
/// query and body parameters). Names are compared decoded and case-insensitively.
pub fn forbidden_query_keys(
    query: Option<&str>,
    recipient_fields: &[String],
) -> Result<(), ProxyError> {
    let Some(query) = query else { return Ok(()) };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let key =
            decode_query_component(raw_key).map_err(|e| ProxyError::bad_request(e.to_string()))?;
        let base = crate::json::fold(key.split('[').next().unwrap_or_default().trim());
        if is_method_override(&key) {
            return Err(ProxyError::bad_request(
                "`_method` is a method override; actgate decides on the request line's method only",
            ));
        }
        if recipient_fields
            .iter()
            .any(|f| crate::json::fold(f) == base)
        {
            return Err(ProxyError::bad_request(format!(
                "query parameter {key:?} is named like a recipient field of the body; send recipients in the JSON body only"
            )));
        }
    }
    Ok(())
}

/// A POST body some upstream frameworks read a method override (`_method`) from: Spring's
/// `HiddenHttpMethodFilter` and Symfony read form fields, Rack's `MethodOverride` reads an
/// untyped POST body as a form, Laravel reads JSON input too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideBody {
    /// `/json` or `+json` anywhere in `Content-Type`: parsed strictly, top-level keys checked.
    Json,
    /// `x-www-form-urlencoded`, `multipart/…` without a boundary, an empty media type or no
    /// `Content-Type` at all: field names decoded.
    Form,
    /// `multipart/…` with a boundary: part names checked, `_method` refused anywhere in it.
    Multipart,
}

/// The kind of body a framework could read a method override from, by `Content-Type`; `None`
/// for any other type (its body streams through unread). A repeated `Content-Type` is refused:
/// two parsers could pick different ones.
pub fn override_body(headers: &HeaderMap) -> Result<Option<OverrideBody>, ProxyError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(Some(OverrideBody::Form)),
        (Some(v), None) => v,
        (Some(_), Some(_)) => {
            return Err(ProxyError::bad_request(
                "Content-Type appears more than once",
            ));
        }
    };
    let value = value
        .to_str()
        .map_err(|_| ProxyError::bad_request("Content-Type is not ASCII"))?
        .to_ascii_lowercase();
    // Parsers cut the media type at different characters (`;`, `,`, a space) and some look
    // for `/json` anywhere in the header (Laravel), so every format the value mentions
    // counts; naming two is refused.
    let media = value
        .split([';', ',', ' ', '\t'])
        .next()
        .unwrap_or_default();
    let json = value.contains("/json") || value.contains("+json");
    let multipart = value.contains("multipart/");
    let form = media.is_empty() || value.contains("x-www-form-urlencoded");
    let kind = match (json, multipart, form) {
        (false, false, false) => return Ok(None),
        (true, false, false) => OverrideBody::Json,
        // Without a boundary Rack reads a multipart body as a form.
        (false, true, false) if has_param(&value, "boundary") => OverrideBody::Multipart,
        (false, true, false) | (false, false, true) => OverrideBody::Form,
        _ => {
            return Err(ProxyError::bad_request(
                "Content-Type names more than one body format",
            ));
        }
    };
    if kind != OverrideBody::Json {
        // A form parser honouring `charset=utf-16` would read `_method` where the bytes do
        // not spell it: only ASCII-compatible charsets are read here.
        for p in value.split([';', ',']) {
            if let Some((k, v)) = p.split_once('=')
                && k.trim() == "charset"
            {
                let cs = v.trim().trim_matches('"');
                if !ASCII_CHARSETS.contains(&cs) {
                    return Err(ProxyError::bad_request(format!(
                        "a form body in charset {cs:?} is not read here; send it in UTF-8"
                    )));
                }
            }
        }
    }
    Ok(Some(kind))
}

fn has_param(value: &str, name: &str) -> bool {
    value
        .split(';')
        .skip(1)
        .any(|p| p.split_once('=').is_some_and(|(k, _)| k.trim() == name))
}

/// Charsets in which the bytes of an ASCII name are the name.
const ASCII_CHARSETS: &[&str] = &[
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "iso-8859-1",
    "latin1",
    "windows-1252",
];

fn method_override_refused() -> ProxyError {
    ProxyError::bad_request(
        "the body carries `_method`, a method override; actgate decides on the request line's method only",
    )
}

/// Whether a decoded parameter name is `_method` as some framework reads it: before any `[`,
/// trimmed, case-folded — or as PHP registers it ([`php_name`]).
fn is_method_override(name: &str) -> bool {
    // Every reading keeps the letters `method` (folding maps no other character onto them),
    // so the common name without them costs no allocation.
    if !name
        .as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"method"))
    {
        return false;
    }
    let common = name.split('[').next().unwrap_or_default().trim();
    crate::json::fold(common) == "_method" || crate::json::fold(&php_name(name)) == "_method"
}

/// A parameter name as PHP registers it: leading spaces dropped, an unclosed `[` read as
/// `_`, the part before a `[…]` kept, and `.` and spaces in it turned into `_` (so
/// `.method`, `[method` and ` .method` all arrive as `_method`).
fn php_name(name: &str) -> String {
    let n = name.trim_start_matches(' ');
    let base = match n.find('[') {
        Some(i) if n[i..].contains(']') => n[..i].to_string(),
        Some(i) => format!(
            "{}_{}",
            &n[..i],
            n[i + 1..].split('[').next().unwrap_or_default()
        ),
        None => n.to_string(),
    };
    base.replace([' ', '.'], "_")
}

/// Refuses a JSON body with a top-level key that reads as `_method` (escapes are already
/// decoded by the strict parser).
pub fn method_override_json(body: &Value) -> Result<(), ProxyError> {
    match body {
        Value::Object(map) if map.keys().any(|k| is_method_override(k)) => {
            Err(method_override_refused())
        }
        _ => Ok(()),
    }
}

/// Refuses a form body with a field named `_method` in any spelling a framework decodes:
/// percent-encoded, `+` for space, case, a `[` suffix, `;` as a separator. A malformed
/// escape in a field name is refused too: parsers disagree on what it means.
pub fn method_override_form(body: &[u8]) -> Result<(), ProxyError> {
    for pair in body.split(|&b| b == b'&' || b == b';') {
        let raw = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let key = decode_form_bytes(raw).map_err(|_| {
            ProxyError::bad_request("a form field name has a malformed percent escape")
        })?;
        if is_method_override(&String::from_utf8_lossy(&key)) {
            return Err(method_override_refused());
        }
    }
    Ok(())
}

/// Refuses a multipart body that mentions `_method` anywhere (any case), or names a part in a
/// way that could spell it encoded: an extended `name*=` parameter (RFC 2231) or an encoded
/// word (`=?utf-8?B?…?=`, RFC 2047, which Commons FileUpload and Tomcat decode) in a
/// `Content-Disposition` line. Deliberately blunt: actgate does not parse multipart, so it
/// refuses what it cannot rule out.
pub fn method_override_multipart(body: &[u8]) -> Result<(), ProxyError> {
    let lower = body.to_ascii_lowercase();
    if memchr::memmem::find(&lower, b"_method").is_some() {
        return Err(method_override_refused());
    }
    for at in memchr::memmem::find_iter(&lower, b"name*") {
        if at == 0 || !lower[at - 1].is_ascii_alphanumeric() {
            return Err(ProxyError::bad_request(
                "a multipart part is named with an extended `name*=` parameter; send plain `name=`",
            ));
        }
    }
    for line in lower.split(|&b| b == b'\n') {
        let line = line.trim_ascii_start();
        if !line.starts_with(b"content-disposition") {
            continue;
        }
        if memchr::memmem::find(line, b"=?").is_some() {
            return Err(ProxyError::bad_request(
                "a multipart Content-Disposition carries an encoded word (`=?…?=`); send plain names",
            ));
        }
        let line = String::from_utf8_lossy(line);
        for param in line.split(';').skip(1) {
            if let Some((k, v)) = param.split_once('=')
                && k.trim() == "name"
                && is_method_override(v.trim().trim_matches('"'))
            {
                return Err(method_override_refused());
            }
        }
    }
    Ok(())
}

/// Follows a JSON pointer, refusing a key along the way that equals the pointer's segment
/// only after case folding (`BCC` for `/bcc`): a case-insensitive upstream would read it as
/// the field actgate did not check.
pub fn lookup<'v>(body: &'v Value, pointer: &str) -> Result<Option<&'v Value>, ProxyError> {
    let mut cur = body;
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match cur {
            Value::Object(map) => {
                let folded = crate::json::fold(&seg);
                if let Some(k) = map
                    .keys()
                    .find(|k| **k != seg && crate::json::fold(k) == folded)
                {
                    return Err(ProxyError::bad_request(format!(
                        "body key {k:?} differs from the recipient field {seg:?} only by letter case"
                    )));
                }
                match map.get(&seg) {
                    Some(v) => cur = v,
                    None => return Ok(None),
                }
            }
            Value::Array(items) => match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => cur = v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Every recipient named at the JSON pointers: a string is one address, an array of strings
/// is several; an absent or null field is none; any other type is refused.
pub fn recipients(body: &Value, pointers: &[String]) -> Result<Vec<String>, ProxyError> {
    let mut out = Vec::new();
    for p in pointers {
        match lookup(body, p)? {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        _ => {
                            return Err(ProxyError::bad_request(format!(
                                "recipient field {p} must hold e-mail address strings"
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ProxyError::bad_request(format!(
                    "recipient field {p} must be an e-mail address or a list of them"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn one_token_exactly() {
        assert_eq!(token(&headers(&[])).unwrap(), None);
        assert_eq!(
            token(&headers(&[("authorization", "Bearer abc")])).unwrap(),
            Some(("abc", TokenHeader::Bearer))
        );
        assert_eq!(
            token(&headers(&[("authorization", "bearer  abc ")])).unwrap(),
            Some(("abc", TokenHeader::Bearer))
        );
        assert_eq!(
            token(&headers(&[
                ("x-act-token", "abc"),
                ("authorization", "Basic xyz")
            ]))
            .unwrap(),
            Some(("abc", TokenHeader::ActToken))
        );
        for bad in [
            vec![("authorization", "Bearer a"), ("x-act-token", "b")],
            vec![("authorization", "Bearer a"), ("authorization", "Bearer a")],
            vec![("x-act-token", "a"), ("x-act-token", "a")],
            vec![("authorization", "Bearer a b")],
            vec![("x-act-token", "")],
        ] {
            assert!(token(&headers(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rows_are_read_strictly() {
        assert_eq!(rows(None, "limit").unwrap(), None);
        assert_eq!(rows(Some("x=1"), "limit").unwrap(), None);
        assert_eq!(rows(Some("limit=50&x=1"), "limit").unwrap(), Some(50));
        assert!(rows(Some("l%69mit=7"), "limit").is_err());
        assert!(rows(Some("LIMIT=7"), "limit").is_err());
        for bad in [
            "limit=1&limit=2",
            "limit=1&LIMIT=2",
            "limit=-1",
            "limit=1e3",
            "limit=0x10",
            "limit=",
            "limit",
            "limit= 5",
            "limit=+5",
            "limit=99999999999999999999",
            "limit[]=5",
            "limit[a]=5",
            "limit=%zz",
        ] {
            assert!(rows(Some(bad), "limit").is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides_and_recipient_lookalikes_in_the_query_are_refused() {
        let fields = vec!["to".to_string(), "cc".to_string(), "bcc".to_string()];
        assert!(forbidden_query_keys(Some("x=1&subject=hi"), &fields).is_ok());
        for bad in [
            "_method=DELETE",
            "_METHOD=delete",
            "%5Fmethod=x",
            "bcc=x@evil.com",
            "To=x",
            "cc[]=x",
        ] {
            assert!(forbidden_query_keys(Some(bad), &fields).is_err(), "{bad}");
        }
        assert!(forbidden_query_keys(Some("to=x"), &[]).is_ok());
    }

    #[test]
    fn recipients_from_strings_and_arrays() {
        let body = json!({"to": "a@x.com", "cc": ["b@x.com", "c@x.com"], "bcc": null});
        let list = recipients(
            &body,
            &["/to".into(), "/cc".into(), "/bcc".into(), "/none".into()],
        )
        .unwrap();
        assert_eq!(list, vec!["a@x.com", "b@x.com", "c@x.com"]);
        assert!(recipients(&json!({"to": {"email": "a@x.com"}}), &["/to".into()]).is_err());
        assert!(recipients(&json!({"to": ["a@x.com", 5]}), &["/to".into()]).is_err());
        assert!(recipients(&json!({"to": 5}), &["/to".into()]).is_err());
    }

    #[test]
    fn method_overrides_in_bodies_are_found_in_every_spelling() {
        for bad in [
            "_method=DELETE",
            "a=1&_METHOD=DELETE",
            "a=1;_method=DELETE",
            "%5Fmethod=DELETE",
            "_m%65thod=DELETE",
            "+_method=DELETE",
            "_method[]=DELETE",
            "_method",
            ".method=DELETE",
            "[method=DELETE",
            "%20.method=DELETE",
            "%2Emethod=DELETE",
        ] {
            assert!(method_override_form(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(
            method_override_form(b"_m%zzethod=1").is_err(),
            "malformed escape"
        );
        for ok in ["a=1&b=2", "method=DELETE", "x_method=1", "a=_method", ""] {
            assert!(method_override_form(ok.as_bytes()).is_ok(), "{ok}");
        }
        assert!(method_override_json(&json!({"_Method": "DELETE"})).is_err());
        assert!(method_override_json(&json!({"a": {"_method": "DELETE"}})).is_ok());
        let part = |name: &str| {
            format!("--b\r\nContent-Disposition: form-data; {name}\r\n\r\nDELETE\r\n--b--\r\n")
        };
        assert!(method_override_multipart(part("name=\"_METHOD\"").as_bytes()).is_err());
        assert!(method_override_multipart(part("name*=UTF-8''%5Fmethod").as_bytes()).is_err());
        assert!(
            method_override_multipart(part("name=\"f\"; filename*=UTF-8''a.txt").as_bytes())
                .is_ok()
        );
        assert!(method_override_multipart(part("name=\"note\"").as_bytes()).is_ok());
        assert!(method_override_multipart(part("name=\".METHOD\"").as_bytes()).is_err());
        assert!(method_override_multipart(part("name=[method").as_bytes()).is_err());
        assert!(
            method_override_multipart(part("name=\"=?UTF-8?B?X21ldGhvZA==?=\"").as_bytes())
                .is_err()
        );
    }

    #[test]
    fn override_bodies_are_told_by_content_type() {
        let kind = |ct: &[&str]| {
            let pairs: Vec<(&str, &str)> = ct.iter().map(|v| ("content-type", *v)).collect();
            override_body(&headers(&pairs))
        };
        assert_eq!(kind(&[]).unwrap(), Some(OverrideBody::Form));
        assert_eq!(
            kind(&["Application/X-WWW-Form-Urlencoded; charset=utf-8"]).unwrap(),
            Some(OverrideBody::Form)
        );
        assert_eq!(
            kind(&["multipart/form-data; boundary=b"]).unwrap(),
            Some(OverrideBody::Multipart)
        );
        assert_eq!(
            kind(&["application/vnd.api+json"]).unwrap(),
            Some(OverrideBody::Json)
        );
        assert_eq!(kind(&["application/octet-stream"]).unwrap(), None);
        assert!(kind(&["application/json", "text/plain"]).is_err());
        for form in [
            "application/x-www-form-urlencoded,",
            "application/x-www-form-urlencoded x",
            "multipart/mixed",
            "multipart/form-data, x",
        ] {
            assert_eq!(kind(&[form]).unwrap(), Some(OverrideBody::Form), "{form}");
        }
        assert_eq!(
            kind(&["multipart/related; boundary=b"]).unwrap(),
            Some(OverrideBody::Multipart)
        );
        for json in [
            "text/plain; x=/json",
            "application/json-patch",
            "application/json,",
        ] {
            assert_eq!(kind(&[json]).unwrap(), Some(OverrideBody::Json), "{json}");
        }
        assert!(kind(&["application/x-www-form-urlencoded; x=/json"]).is_err());
        assert!(kind(&["application/x-www-form-urlencoded; charset=UTF-16"]).is_err());
        assert!(kind(&["multipart/form-data; boundary=b; charset=\"utf-32\""]).is_err());
        assert_eq!(
            kind(&["application/x-www-form-urlencoded; charset=\"UTF-8\""]).unwrap(),
            Some(OverrideBody::Form)
        );
    }
}
