//! Strict JSON: one reading of a body, whoever reads it next.
//!
//! Pure: no I/O. Parsers disagree on duplicate keys (first wins, last wins, error), and some
//! (Go's `encoding/json`, ASP.NET) match keys case-insensitively, so a body with two keys
//! that are equal after case folding (`to` and `To`, `s` and `ſ`) is refused at any depth;
//! nesting deeper than a limit is refused before it can cost stack; trailing data, invalid
//! UTF-8 and lone surrogates are refused by `serde_json`.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON value, refusing duplicate keys and nesting deeper than
/// `max_depth` (1 = a flat object or array). The error says what and where.
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict {
        depth: 0,
        max: max_depth,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
    max: usize,
}

impl Strict {
    fn deeper<E: serde::de::Error>(self) -> Result<Strict, E> {
        if self.depth >= self.max {
            return Err(E::custom(format!(
                "JSON nested deeper than {} levels",
                self.max
            )));
        }
        Ok(Strict {
            depth: self.depth + 1,
            max: self.max,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Map::new();
        let mut folded: std::collections::HashSet<String> = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !folded.insert(fold(&key)) {
                return Err(A::Error::custom(format!(
                    "duplicate key {key:?} (keys must differ by more than letter case)"
                )));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A key as a case-insensitive matcher sees it: Unicode lower case, plus the folds Go's
/// `encoding/json` applies (`ſ` → `s`, Kelvin sign → `k`) and those of matchers comparing
/// upper-case mappings (Java's `equalsIgnoreCase`: dotless `ı` and dotted `İ` → `i`).
pub fn fold(key: &str) -> String {
    key.chars()
        .flat_map(|c| match c {
            // `İ` lower-cases to `i` + a combining dot; either way it reads as `i`.
            '\u{130}' => 'i'.to_lowercase(),
            c => c.to_lowercase(),
        })
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            '\u{131}' => 'i',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_json() {
        let v = parse_strict(br#"{"a": [1, {"b": "c"}], "d": null}"#, 8).unwrap();
        assert_eq!(v["a"][1]["b"], "c");
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        for body in [
            r#"{"to": "a@x.com", "to": "b@evil.com"}"#,
            r#"{"m": {"cc": [], "cc": ["x"]}}"#,
            r#"[{"a": 1, "a": 1}]"#,
            r#"{"to": 1, "t\u006f": 2}"#,
            r#"{"to": "a@x.com", "To": "b@evil.com"}"#,
            r#"{"bcc": [], "BCC": ["b@evil.com"]}"#,
            r#"{"subject": 1, "\u017fubject": 2}"#,
            r#"{"limit": 1, "l\u0131m\u0131t": 2}"#,
            r#"{"limit": 1, "L\u0130MIT": 2}"#,
        ] {
            let err = parse_strict(body.as_bytes(), 8).unwrap_err();
            assert!(err.contains("duplicate key"), "{body}: {err}");
        }
    }

    #[test]
    fn refuses_deep_nesting_trailing_data_and_bad_text() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(
            parse_strict(deep.as_bytes(), 32)
                .unwrap_err()
                .contains("deeper than 32")
        );
        assert!(parse_strict(b"[[1]]", 2).is_ok());
        assert!(parse_strict(b"[[[1]]]", 2).is_err());
        assert!(parse_strict(b"{} {}", 8).is_err());
        assert!(parse_strict(b"{\"a\": \"\xff\"}", 8).is_err());
        assert!(parse_strict(br#"{"a": "\ud800"}"#, 8).is_err());
        assert!(parse_strict(b"", 8).is_err());
    }
}
