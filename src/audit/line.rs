//! One log line, written by hand: `{"prevHash":"<hex>",` then the event's fields in their
//! declaration order — byte for byte what serde writes for a [`super::log::Record`], which is
//! how every reader parses it (a differential test holds the two together).
//!
//! Why by hand: serde writes each key through the escaper and each piece through a separate
//! `write_all`, and escapes byte by byte; in the audit writer that was its largest user-space
//! cost (13% of the thread, perf). Here a key and its punctuation are one constant, a string
//! with nothing to escape — nearly all of them — is checked sixteen bytes at a time without a
//! branch per byte and copied once, and the line goes straight into the batch buffer.

use super::{AuditEvent, EventKind};

/// Appends the line for `e` (without its newline) to `buf`. `prev_hex` is the lower-case hex
/// SHA-256 of the previous line.
pub(super) fn write_line(
    buf: &mut Vec<u8>,
    prev_hex: &[u8; 64],
    e: &AuditEvent,
) -> serde_json::Result<()> {
    // Destructured without `..`: a field added to the event does not compile until it is
    // written here too.
    let AuditEvent {
        seq,
        kind,
        id,
        decision_id,
        time,
        time_ms,
        tenant_id,
        source,
        request_id,
        agent_id,
        token_id,
        action,
        resource,
        decision,
        reason,
        policy_id,
        message,
        enforced,
        route,
        method,
        upstream_status,
        upstream_error,
        latency_us,
        snapshot_version,
        count,
        mcp_method,
        tool,
        arguments_sha256,
        arguments,
    } = e;
    buf.extend_from_slice(b"{\"prevHash\":\"");
    buf.extend_from_slice(prev_hex);
    buf.extend_from_slice(b"\",\"seq\":");
    uint(buf, *seq);
    buf.extend_from_slice(match kind {
        EventKind::Decision => b",\"kind\":\"decision\"",
        EventKind::Outcome => b",\"kind\":\"outcome\"",
        EventKind::Summary => b",\"kind\":\"summary\"",
    });
    string(buf, b",\"id\":", id);
    opt_string(buf, b",\"decisionId\":", decision_id);
    string(buf, b",\"time\":", time);
    buf.extend_from_slice(b",\"timeMs\":");
    buf.extend_from_slice(itoa::Buffer::new().format(*time_ms).as_bytes());
    string(buf, b",\"tenantId\":", tenant_id);
    buf.extend_from_slice(b",\"source\":\"");
    buf.extend_from_slice(source.as_str().as_bytes());
    buf.push(b'"');
    string(buf, b",\"requestId\":", request_id);
    opt_string(buf, b",\"agentId\":", agent_id);
    opt_string(buf, b",\"tokenId\":", token_id);
    nonempty_string(buf, b",\"action\":", action);
    nonempty_string(buf, b",\"resource\":", resource);
    nonempty_string(buf, b",\"decision\":", decision);
    nonempty_string(buf, b",\"reason\":", reason);
    opt_string(buf, b",\"policyId\":", policy_id);
    nonempty_string(buf, b",\"message\":", message);
    buf.extend_from_slice(if *enforced {
        b",\"enforced\":true"
    } else {
        b",\"enforced\":false"
    });
    opt_string(buf, b",\"route\":", route);
    if let Some(m) = method {
        string(buf, b",\"method\":", m);
    }
    if let Some(status) = upstream_status {
        buf.extend_from_slice(b",\"upstreamStatus\":");
        uint(buf, u64::from(*status));
    }
    opt_string(buf, b",\"upstreamError\":", upstream_error);
    if let Some(us) = latency_us {
        buf.extend_from_slice(b",\"latencyUs\":");
        uint(buf, *us);
    }
    buf.extend_from_slice(b",\"snapshotVersion\":");
    uint(buf, *snapshot_version);
    if let Some(n) = count {
        buf.extend_from_slice(b",\"count\":");
        uint(buf, *n);
    }
    opt_string(buf, b",\"mcpMethod\":", mcp_method);
    opt_string(buf, b",\"tool\":", tool);
    opt_string(buf, b",\"argumentsSha256\":", arguments_sha256);
    if let Some(v) = arguments {
        buf.extend_from_slice(b",\"arguments\":");
        serde_json::to_writer(&mut *buf, v)?;
    }
    buf.push(b'}');
    Ok(())
}

fn uint(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn string(buf: &mut Vec<u8>, key: &[u8], s: &str) {
    buf.extend_from_slice(key);
    escaped(buf, s);
}

fn opt_string(buf: &mut Vec<u8>, key: &[u8], s: &Option<impl AsRef<str>>) {
    if let Some(s) = s {
        string(buf, key, s.as_ref());
    }
}

fn nonempty_string(buf: &mut Vec<u8>, key: &[u8], s: &str) {
    if !s.is_empty() {
        string(buf, key, s);
    }
}

/// What JSON requires escaped: `"`, `\` and control characters (serde_json escapes nothing
/// else, not DEL, `/` or non-ASCII).
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Eight bytes at a time, whether any needs escaping (SWAR: a byte below 0x20, or equal to
/// `"` or `\`, leaves its top bit set in the result; exact as a yes/no answer, which is all
/// that is asked).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20);
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let any =
        control | (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash);
    any & !w & HIGH != 0
}

/// How many leading bytes of `bytes` are certainly clean: all of them, or at least up to
/// the eight-byte word holding the first byte to escape.
fn clean_prefix(bytes: &[u8]) -> usize {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let mut clean = 0;
    for w in bytes.chunks_exact(8) {
        if word_needs_escape(word(w)) {
            return clean;
        }
        clean += 8;
    }
    let tail_clean = if bytes.len() >= 8 {
        // The last eight bytes, overlapping what was checked: one more word, not a loop.
        !word_needs_escape(word(&bytes[bytes.len() - 8..]))
    } else {
        !bytes.iter().any(|&b| needs_escape(b))
    };
    if tail_clean { bytes.len() } else { clean }
}

/// `s` as a JSON string, quoted, escaped exactly as serde_json escapes.
fn escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.push(b'"');
    let clean = clean_prefix(bytes);
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if !needs_escape(b) {
            continue;
        }
        buf.extend_from_slice(&bytes[copied..i]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
        }
        copied = i + 1;
    }
    buf.extend_from_slice(&bytes[copied..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::super::log::Record;
    use super::super::{AuditEvent, EventKind, Source};
    use super::*;
    use proptest::prelude::*;

    fn serde_line(prev: &str, e: &AuditEvent) -> String {
        serde_json::to_string(&Record {
            prev_hash: prev.into(),
            event: e.clone(),
        })
        .unwrap()
    }

    fn hand_line(prev: &str, e: &AuditEvent) -> String {
        let mut buf = Vec::new();
        write_line(&mut buf, prev.as_bytes().try_into().unwrap(), e).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn text() -> BoxedStrategy<String> {
        // Mostly plain identifiers (the common case), and strings of every escape and of
        // multi-byte characters, long enough to span several eight-byte words.
        prop_oneof![
            "[a-z_0-9]{0,40}",
            "[\\x00-\\x7f]{0,40}",
            "[a-zA-Z\"\\\\\\n\\r\\t\\x08\\x0c\\x00-\\x1f\\x7f/ üé€😀]{0,70}",
            any::<String>(),
        ]
        .boxed()
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    prop_compose! {
        fn event()(
            seq in any::<u64>(),
            kind in prop_oneof![Just(EventKind::Decision), Just(EventKind::Outcome), Just(EventKind::Summary)],
            source in prop_oneof![Just(Source::Enforce), Just(Source::Proxy), Just(Source::Mcp)],
            texts in proptest::collection::vec(text(), 9),
            opts in proptest::collection::vec(opt_text(), 10),
            time_ms in any::<i64>(),
            enforced in any::<bool>(),
            upstream_status in proptest::option::of(any::<u16>()),
            numbers in proptest::collection::vec(proptest::option::of(any::<u64>()), 2),
            snapshot_version in any::<u64>(),
            arguments in proptest::option::of(text().prop_map(|s| serde_json::json!({"q": s, "n": [1, 2.5, null]}))),
        ) -> AuditEvent {
            let [id, time, tenant_id, request_id, action, resource, decision, reason, message] =
                <[String; 9]>::try_from(texts).unwrap();
            let [decision_id, agent_id, token_id, policy_id, route, method, upstream_error, mcp_method, tool, arguments_sha256] =
                <[Option<String>; 10]>::try_from(opts).unwrap();
            AuditEvent {
                seq, kind, id, decision_id, time, time_ms, tenant_id: tenant_id.into(), source,
                request_id, agent_id: agent_id.map(Into::into), token_id: token_id.map(Into::into),
                action: action.into(), resource, decision: decision.into(), reason: reason.into(),
                policy_id: policy_id.map(Into::into), message, enforced, route: route.map(Into::into),
                method: method.map(Into::into), upstream_status, upstream_error, latency_us: numbers[0],
                snapshot_version, count: numbers[1], mcp_method, tool, arguments_sha256, arguments,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Byte for byte what serde writes, whatever the fields hold.
        #[test]
        fn the_line_is_what_serde_writes(e in event()) {
            let prev = "0123456789abcdef".repeat(4);
            prop_assert_eq!(hand_line(&prev, &e), serde_line(&prev, &e));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The word test answers what the byte test answers for any eight bytes, mostly
        /// clean ones with one or two of interest planted.
        #[test]
        fn a_word_needs_escape_when_a_byte_does(
            mut bytes in proptest::array::uniform8(0x20u8..=0xff),
            planted in proptest::collection::vec((0usize..8, any::<u8>()), 0..3),
        ) {
            for (i, b) in planted {
                bytes[i] = b;
            }
            prop_assert_eq!(
                word_needs_escape(u64::from_le_bytes(bytes)),
                bytes.iter().any(|&b| needs_escape(b))
            );
        }
    }

    #[test]
    fn every_byte_in_every_position_of_a_word() {
        for base in [b'a', 0x80, 0xff, b'!', b'#', b'[', b']'] {
            for pos in 0..8 {
                for b in 0..=255u8 {
                    let mut w = [base; 8];
                    w[pos] = b;
                    assert_eq!(
                        word_needs_escape(u64::from_le_bytes(w)),
                        needs_escape(b),
                        "byte {b:#04x} at {pos} among {base:#04x}"
                    );
                }
            }
        }
    }

    /// One byte to escape at every position of every length up to three words: in a whole
    /// word, in the overlapping last word only, in a string shorter than a word.
    #[test]
    fn one_escape_anywhere_in_short_strings() {
        for n in 1..=24 {
            for k in 0..n {
                for c in ['"', '\\', '\u{1}', '\u{1f}', '\n'] {
                    let s: String = (0..n).map(|i| if i == k { c } else { 'a' }).collect();
                    let mut buf = Vec::new();
                    escaped(&mut buf, &s);
                    assert_eq!(
                        String::from_utf8(buf).unwrap(),
                        serde_json::to_string(&s).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_byte_is_escaped_as_serde_escapes_it() {
        let all: String = (0u8..=0x7f).map(char::from).collect::<String>() + "ü€😀";
        for s in [all.clone(), all.repeat(3), format!("{}\"", "a".repeat(31))] {
            let mut buf = Vec::new();
            escaped(&mut buf, &s);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }
}
