//! Strict e-mail address and domain parsing for the `allowedDomains` constraint.
//!
//! Pure: no I/O. The grammar is deliberately narrower than RFC 5322: an agent-supplied
//! recipient is accepted only as one plain `local@domain`. Display names (`Bob <b@x.com>`),
//! comments (`b@x.com (c)`), quoted local parts (`"a@b"@x.com`), route addresses, groups,
//! lists, IP literals, whitespace and control characters are all refused, because each is a
//! place where a mail library downstream may read a different recipient than we checked.
//! Domains are normalised once: lower case, one trailing dot removed, international names
//! converted to their ASCII (punycode) form.

use std::fmt;

/// Longest accepted address, in bytes (RFC 5321 forward-path limit).
const MAX_ADDRESS_LEN: usize = 254;
/// Longest accepted local part, in bytes (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;
/// Longest accepted domain, in bytes, after normalisation.
const MAX_DOMAIN_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// A parsed recipient: the local part as given, the domain normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The part before `@`, unchanged.
    pub local: String,
    /// The domain: lower-case ASCII, punycode for international names, no trailing dot.
    pub domain: String,
}

/// Why a string is not accepted as a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Empty string.
    Empty,
    /// Longer than 254 bytes, or a local part over 64.
    TooLong,
    /// Whitespace or a control character anywhere.
    Whitespace,
    /// `<`, `>`, `(`, `)`, `"`, `,`, `;`, `:`, `[`, `]` or `\`: display names, comments,
    /// quoting, groups, lists and IP literals.
    Special,
    /// No `@`, or more than one.
    AtCount,
    /// The local part is empty or not a dot-atom.
    Local,
    /// The domain is not a valid host name.
    Domain,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Empty => "empty address",
            AddressError::TooLong => "address too long",
            AddressError::Whitespace => "whitespace or control character in address",
            AddressError::Special => {
                "display names, comments, quoting, lists and IP literals are not accepted; use a plain local@domain"
            }
            AddressError::AtCount => "an address has exactly one @",
            AddressError::Local => "invalid local part",
            AddressError::Domain => "invalid domain",
        })
    }
}

impl std::error::Error for AddressError {}

/// Parses one recipient strictly. See the module documentation for what is refused.
pub fn parse_address(input: &str) -> Result<Address, AddressError> {
    if input.is_empty() {
        return Err(AddressError::Empty);
    }
    if input.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    for c in input.chars() {
        if c.is_whitespace() || c.is_control() {
            return Err(AddressError::Whitespace);
        }
        if matches!(
            c,
            '<' | '>' | '(' | ')' | '"' | ',' | ';' | ':' | '[' | ']' | '\\'
        ) {
            return Err(AddressError::Special);
        }
    }
    let mut parts = input.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AddressError::AtCount);
    };
    if local.len() > MAX_LOCAL_LEN {
        return Err(AddressError::TooLong);
    }
    if !is_dot_atom(local) {
        return Err(AddressError::Local);
    }
    let domain = normalize_domain(domain).ok_or(AddressError::Domain)?;
    Ok(Address {
        local: local.to_string(),
        domain,
    })
}

/// RFC 5322 dot-atom of ASCII `atext`: no leading, trailing or doubled dot.
fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
}

/// Normalises a host name: one trailing dot removed, international names to punycode,
/// lower case; then checks it is a plain DNS name (labels of letters, digits and inner
/// hyphens). `None` when it is not one.
pub fn normalize_domain(input: &str) -> Option<String> {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() || trimmed.len() > MAX_DOMAIN_LEN * 4 {
        return None;
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(trimmed).ok()?
    };
    is_host_name(&ascii).then_some(ascii)
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN_LEN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// One entry of `allowedDomains`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRule {
    /// `yourcompany.com` or `@yourcompany.com`: that domain exactly.
    Exact(String),
    /// `*.yourcompany.com`: any strict subdomain, not the domain itself.
    Subdomains(String),
}

impl DomainRule {
    /// Parses an `allowedDomains` entry; the error says how to write it.
    pub fn parse(entry: &str) -> Result<DomainRule, String> {
        let (subdomains, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry.strip_prefix('@').unwrap_or(entry)),
        };
        let domain = normalize_domain(rest).ok_or_else(|| {
            format!(
                "`{entry}` is not a domain; write `example.com`, `@example.com` or `*.example.com`"
            )
        })?;
        Ok(if subdomains {
            DomainRule::Subdomains(domain)
        } else {
            DomainRule::Exact(domain)
        })
    }

    /// Whether a normalised domain is allowed by this rule. Matching is by whole labels, so
    /// `yourcompany.com.evil.com` and `evilyourcompany.com` never match `yourcompany.com`.
    pub fn allows(&self, domain: &str) -> bool {
        match self {
            DomainRule::Exact(d) => domain == d,
            DomainRule::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, expected domain or None when refused)
    const CASES: &[(&str, Option<&str>)] = &[
        ("alice@yourcompany.com", Some("yourcompany.com")),
        ("Alice@YourCompany.COM", Some("yourcompany.com")),
        ("alice@yourcompany.com.", Some("yourcompany.com")),
        (
            "first.last+tag@sub.yourcompany.com",
            Some("sub.yourcompany.com"),
        ),
        ("o'brien@yourcompany.com", Some("yourcompany.com")),
        ("a@b", Some("b")),
        ("user@xn--bcher-kva.example", Some("xn--bcher-kva.example")),
        ("user@bücher.example", Some("xn--bcher-kva.example")),
        ("user@BÜCHER.example", Some("xn--bcher-kva.example")),
        ("x_y-z@yourcompany.com", Some("yourcompany.com")),
        ("", None),
        ("yourcompany.com", None),
        ("@yourcompany.com", None),
        ("alice@", None),
        ("alice@@yourcompany.com", None),
        ("alice@evil.com@yourcompany.com", None),
        ("Alice <alice@yourcompany.com>", None),
        ("<alice@yourcompany.com>", None),
        ("alice@yourcompany.com (comment)", None),
        ("alice(comment)@yourcompany.com", None),
        ("\"alice@yourcompany.com\"@evil.com", None),
        ("\"a b\"@yourcompany.com", None),
        ("alice@yourcompany.com,bob@evil.com", None),
        ("alice@yourcompany.com;bob@evil.com", None),
        ("group: alice@yourcompany.com;", None),
        ("alice@[127.0.0.1]", None),
        (" alice@yourcompany.com", None),
        ("alice@yourcompany.com ", None),
        ("alice@yourcompany.com\r\nBcc: x@evil.com", None),
        ("alice@your\u{0}company.com", None),
        (".alice@yourcompany.com", None),
        ("alice.@yourcompany.com", None),
        ("al..ice@yourcompany.com", None),
        ("alice@yourcompany..com", None),
        ("alice@-yourcompany.com", None),
        ("alice@yourcompany-.com", None),
        ("alice@your_company.com", None),
        ("alice@yourcompany.com..", None),
        ("alice\\@evil.com@yourcompany.com", None),
        ("@evil.com:alice@yourcompany.com", None),
        ("alice%evil.com@yourcompany.com", Some("yourcompany.com")),
        ("ålice@yourcompany.com", None),
    ];

    #[test]
    fn address_table() {
        for (input, want) in CASES {
            let got = parse_address(input).ok().map(|a| a.domain);
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn overlong_addresses_are_refused() {
        let local = "a".repeat(65);
        assert_eq!(
            parse_address(&format!("{local}@x.com")),
            Err(AddressError::TooLong)
        );
        let long = format!("a@{}.com", "b".repeat(260));
        assert_eq!(parse_address(&long), Err(AddressError::TooLong));
        let label = format!("a@{}.com", "b".repeat(64));
        assert_eq!(parse_address(&label), Err(AddressError::Domain));
    }

    #[test]
    fn domain_rules_match_whole_labels() {
        let exact = DomainRule::parse("yourcompany.com").unwrap();
        assert_eq!(DomainRule::parse("@YourCompany.com.").unwrap(), exact);
        assert!(exact.allows("yourcompany.com"));
        assert!(!exact.allows("yourcompany.com.evil.com"));
        assert!(!exact.allows("evilyourcompany.com"));
        assert!(!exact.allows("sub.yourcompany.com"));

        let subs = DomainRule::parse("*.yourcompany.com").unwrap();
        assert!(subs.allows("eu.yourcompany.com"));
        assert!(subs.allows("a.b.yourcompany.com"));
        assert!(!subs.allows("yourcompany.com"));
        assert!(!subs.allows("evilyourcompany.com"));
        assert!(!subs.allows(".yourcompany.com"));
    }

    #[test]
    fn bad_domain_rules_say_how_to_write_them() {
        for bad in [
            "",
            "@",
            "*.",
            "a b.com",
            "*.*.x.com",
            "x@y.com",
            "http://x.com",
        ] {
            let err = DomainRule::parse(bad).unwrap_err();
            assert!(err.contains("@example.com"), "{bad}: {err}");
        }
    }
}
