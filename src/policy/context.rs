//! Reading constraint facts from a JSON `context` (`/v1/enforce`, `actgate check --context`).
//!
//! Pure: no I/O. Recognised keys: `rows` or `limit` (a whole number), `recipients`, `to`,
//! `cc`, `bcc` (a string or a list of strings; all are checked), `method` (an HTTP method).
//! Other keys are the caller's own and are ignored. A key with the wrong type is an error,
//! never silently skipped.

use serde_json::{Map, Value};

use super::model::Facts;

/// Keys whose values are recipients.
pub const RECIPIENT_KEYS: &[&str] = &["recipients", "to", "cc", "bcc"];

/// Facts read from a context, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextFacts {
    /// `rows` / `limit`.
    pub rows: Option<u64>,
    /// Every recipient named under any recipient key, or `None` when no such key is present.
    pub recipients: Option<Vec<String>>,
    /// `method`, upper-cased.
    pub method: Option<String>,
}

impl ContextFacts {
    /// Borrows as [`Facts`] for the decision core.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            rows: self.rows,
            recipients: self.recipients.as_deref(),
            method: self.method.as_deref(),
            rows_unenforceable: false,
            recipients_unenforceable: false,
        }
    }

    /// Reads a context object. The error names the key and what it must be.
    pub fn from_json(context: &Map<String, Value>) -> Result<ContextFacts, String> {
        let mut out = ContextFacts::default();
        let mut rows_key: Option<&str> = None;
        for key in ["rows", "limit"] {
            let Some(v) = context.get(key) else { continue };
            let n = v
                .as_u64()
                .filter(|n| *n <= crate::policy::model::MAX_ROWS)
                .ok_or_else(|| {
                    format!(
                        "context.{key} must be a whole number from 0 to {} (the rows the call will return)",
                        crate::policy::model::MAX_ROWS
                    )
                })?;
            if let (Some(prev), Some(first)) = (out.rows, rows_key)
                && prev != n
            {
                return Err(format!(
                    "context.{first} and context.{key} disagree ({prev} vs {n}); send one"
                ));
            }
            out.rows = Some(n);
            rows_key = Some(key);
        }
        for key in RECIPIENT_KEYS {
            let Some(v) = context.get(*key) else { continue };
            let list = out.recipients.get_or_insert_with(Vec::new);
            match v {
                Value::String(s) => list.push(s.clone()),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let s = item.as_str().ok_or_else(|| {
                            format!("context.{key}[{i}] must be a string (an e-mail address)")
                        })?;
                        list.push(s.to_string());
                    }
                }
                _ => {
                    return Err(format!(
                        "context.{key} must be an e-mail address or a list of them"
                    ));
                }
            }
        }
        if let Some(v) = context.get("method") {
            let m = v
                .as_str()
                .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()))
                .ok_or("context.method must be an HTTP method such as GET")?;
            out.method = Some(m.to_ascii_uppercase());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<ContextFacts, String> {
        let v: Value = serde_json::from_str(json).unwrap();
        ContextFacts::from_json(v.as_object().unwrap())
    }

    #[test]
    fn empty_context_leaves_everything_unknown() {
        assert_eq!(read("{}").unwrap(), ContextFacts::default());
    }

    #[test]
    fn rows_recipients_and_method() {
        let c = read(r#"{"limit": 5, "to": "a@x.com", "cc": ["b@x.com"], "bcc": [], "method": "post", "other": 1}"#)
            .unwrap();
        assert_eq!(c.rows, Some(5));
        assert_eq!(c.recipients.unwrap(), vec!["a@x.com", "b@x.com"]);
        assert_eq!(c.method.as_deref(), Some("POST"));
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(
            read(r#"{"rows": -1}"#)
                .unwrap_err()
                .contains("context.rows")
        );
        assert!(read(r#"{"rows": "10"}"#).is_err());
        assert!(read(r#"{"rows": 1.5}"#).is_err());
        assert!(
            read(r#"{"rows": 1, "limit": 2}"#)
                .unwrap_err()
                .contains("disagree")
        );
        assert!(read(r#"{"to": 5}"#).is_err());
        assert!(
            read(r#"{"cc": [5]}"#)
                .unwrap_err()
                .contains("context.cc[0]")
        );
        assert!(read(r#"{"method": "G ET"}"#).is_err());
    }
}
