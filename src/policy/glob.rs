//! Resource globs: validation, compilation, and the literal prefix the index buckets them by.
//!
//! Pure: no I/O. Semantics are globset's with `literal_separator(true)`: `*` and `?` never
//! cross `/`, `**` does, `[a-z]` and `{a,b}` as usual, `\` escapes. The resource a request
//! names is always data matched against the pattern, never a pattern itself, so `*`, `?`, `[`
//! or `{` inside a resource value cannot widen a match.
//!
//! Two shapes cover almost every real policy and are matched without a regex: a literal
//! (`api://crm/customers`) and a literal prefix followed by one trailing `*`
//! (`api://crm/customers/*`). Everything else goes through a compiled `GlobMatcher`. The
//! differential test in `tests/policy_differential.rs` checks the fast shapes against
//! globset itself.

use globset::{Candidate, GlobBuilder, GlobMatcher};

/// Bytes that make a pattern a glob rather than a literal.
const META: &[u8] = b"*?[]{}\\";

/// A compiled resource pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    kind: Kind,
    /// Length of the pattern's literal prefix, cut back to just after its last `/`: every
    /// matching resource starts with exactly these bytes. Empty when there is no `/` before
    /// the first glob character.
    bucket_len: usize,
    source: Box<str>,
}

#[derive(Debug, Clone)]
enum Kind {
    /// No glob characters: equality.
    Literal,
    /// `<literal>*`: starts with the literal, no `/` after it.
    SegmentTail,
    /// Anything else.
    Glob(GlobMatcher),
}

fn builder(pattern: &str) -> GlobBuilder<'_> {
    let mut b = GlobBuilder::new(pattern);
    b.literal_separator(true).backslash_escape(true);
    b
}

/// Checks a resource pattern; the error says what is wrong.
pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("must not be empty; use `**` to match every resource".into());
    }
    if pattern.chars().any(char::is_control) {
        return Err("control characters are not allowed in a resource pattern".into());
    }
    builder(pattern)
        .build()
        .map(|_| ())
        .map_err(|e| format!("not a valid glob: {}", e.kind()))
}

impl Pattern {
    /// Compiles a pattern that passed [`validate`].
    pub fn compile(pattern: &str) -> Result<Pattern, String> {
        validate(pattern)?;
        let first_meta = pattern.bytes().position(|b| META.contains(&b));
        let literal = &pattern[..first_meta.unwrap_or(pattern.len())];
        let bucket_len = literal.rfind('/').map_or(0, |i| i + 1);
        let kind = match first_meta {
            None => Kind::Literal,
            Some(i) if i == pattern.len() - 1 && pattern.ends_with('*') => Kind::SegmentTail,
            Some(_) => Kind::Glob(
                builder(pattern)
                    .build()
                    .map_err(|e| e.to_string())?
                    .compile_matcher(),
            ),
        };
        Ok(Pattern {
            kind,
            bucket_len,
            source: pattern.into(),
        })
    }

    /// Whether the pattern has no glob characters at all.
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Literal)
    }

    /// The bytes every match starts with, ending at a `/` (or empty).
    pub fn bucket(&self) -> &str {
        &self.source[..self.bucket_len]
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `resource` matches.
    pub fn is_match(&self, resource: &str) -> bool {
        match &self.kind {
            Kind::Literal => resource == &*self.source,
            Kind::SegmentTail => {
                let prefix = &self.source[..self.source.len() - 1];
                resource
                    .strip_prefix(prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            }
            Kind::Glob(m) => m.is_match_candidate(&Candidate::from_bytes(resource.as_bytes())),
        }
    }
}

/// Matches with globset alone, compiling the pattern each time. For the reference evaluator
/// and `explain`, where clarity beats speed.
pub fn matches_slow(pattern: &str, resource: &str) -> bool {
    builder(pattern)
        .build()
        .map(|g| {
            g.compile_matcher()
                .is_match_candidate(&Candidate::from_bytes(resource.as_bytes()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, r: &str) -> bool {
        let fast = Pattern::compile(p).unwrap().is_match(r);
        assert_eq!(
            fast,
            matches_slow(p, r),
            "fast and slow disagree on {p} / {r}"
        );
        fast
    }

    #[test]
    fn star_stays_in_one_segment() {
        assert!(m("api://crm/customers/*", "api://crm/customers/42"));
        assert!(!m("api://crm/customers/*", "api://crm/customers/42/notes"));
        assert!(m("api://crm/customers/*", "api://crm/customers/"));
        assert!(!m("api://crm/customers/*", "api://crm/customers"));
        assert!(!m("api://crm/customers/*", "api://crm/customersX"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m("api://crm/**", "api://crm/customers/42/notes"));
        assert!(m("api://crm/**", "api://crm/customers"));
        assert!(!m("api://crm/**", "api://crmx/customers"));
        assert!(m("**", "anything/at/all"));
        assert!(m("api://**/notes", "api://crm/customers/42/notes"));
    }

    #[test]
    fn classes_alternations_and_question_marks() {
        assert!(m("api://crm/{customers,leads}/*", "api://crm/leads/1"));
        assert!(!m("api://crm/{customers,leads}/*", "api://crm/deals/1"));
        assert!(m("api://crm/customers/[0-9]", "api://crm/customers/7"));
        assert!(!m("api://crm/customers/[0-9]", "api://crm/customers/x"));
        assert!(m("api://crm/customers/?", "api://crm/customers/7"));
        assert!(!m("api://crm/customers/?", "api://crm/customers//"));
        assert!(!m("api://crm/?", "api://crm//"));
    }

    #[test]
    fn resource_values_are_data_not_patterns() {
        // A resource containing glob characters only matches where the pattern allows those
        // characters as data; it never acts as a wildcard itself.
        assert!(!m("api://crm/customers/42", "api://crm/customers/*"));
        assert!(!m("api://crm/customers/42", "api://crm/customers/4?"));
        assert!(!m("api://crm/customers/*", "api://crm/customers/*/notes"));
        assert!(m("api://crm/customers/*", "api://crm/customers/*"));
        assert!(!m("api://crm/customers/{1,2}", "api://crm/customers/{1,2}"));
        assert!(m("api://crm/customers/\\*", "api://crm/customers/*"));
        assert!(!m("api://crm/customers/\\*", "api://crm/customers/42"));
    }

    #[test]
    fn buckets_end_at_a_slash() {
        assert_eq!(
            Pattern::compile("api://crm/customers/*").unwrap().bucket(),
            "api://crm/customers/"
        );
        assert_eq!(
            Pattern::compile("api://crm/cust*").unwrap().bucket(),
            "api://crm/"
        );
        assert_eq!(Pattern::compile("api:*").unwrap().bucket(), "");
        assert_eq!(Pattern::compile("**").unwrap().bucket(), "");
        assert_eq!(Pattern::compile("api://a/b").unwrap().bucket(), "api://a/");
        assert!(Pattern::compile("api://a/b").unwrap().is_literal());
    }

    #[test]
    fn invalid_globs_are_explained() {
        assert!(
            validate("api://x/[a")
                .unwrap_err()
                .contains("not a valid glob")
        );
        assert!(
            validate("api://x/{a,b")
                .unwrap_err()
                .contains("not a valid glob")
        );
        assert!(validate("").is_err());
        assert!(validate("api://x/\u{7}").is_err());
    }
}
