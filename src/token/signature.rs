//! The signature check of a PASETO v4.public token, with ed25519-dalek.
//!
//! pasetors parses and issues tokens; the signature is checked here rather than by
//! `PublicToken::verify`, because a token-cache miss is mostly one Ed25519 verification and
//! ed25519-dalek's is faster than ed25519-compact's, which pasetors uses (BENCHMARKS.md,
//! sixth pass). What is checked is exactly what `PublicToken::verify` checks (PASETO v4,
//! "Verify"): the signature is the last 64 bytes of the decoded message, over
//! `PAE("v4.public.", payload, footer, implicit assertion)`, and the payload must be UTF-8.
//!
//! Strictness: `verify_strict` (canonical `S`, no small-order `R` or key, and the cofactorless
//! equation `[S]B = R + [k]A` checked by comparing encodings) accepts a subset of what
//! ed25519-compact accepts (which also lets through a signature off by a small-order point, a
//! form only the key's holder can produce). Every token pasetors signs verifies under both;
//! `tests` below hold the two verifiers to the same answers on valid, altered and wrongly
//! keyed tokens, and the PASETO test vectors.

use ed25519_dalek::{Signature, VerifyingKey};
use pasetors::Public;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};

/// Length of an Ed25519 signature.
const SIG_LEN: usize = 64;

/// PASETO's pre-authentication encoding: the count of pieces, then each piece's length, all
/// as 64-bit little-endian with the top bit clear, each length followed by its piece.
fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let le64 = |n: usize| (n as u64 & (u64::MAX >> 1)).to_le_bytes();
    let len = 8 + pieces.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&le64(pieces.len()));
    for piece in pieces {
        out.extend_from_slice(&le64(piece.len()));
        out.extend_from_slice(piece);
    }
    out
}

/// The payload of `token` if its signature verifies under `key` with the implicit assertion
/// `implicit`, else `None` (a bad or misplaced signature, or a payload that is not UTF-8).
pub(super) fn verify<'t>(
    key: &VerifyingKey,
    token: &'t UntrustedToken<Public, V4>,
    implicit: &[u8],
) -> Option<&'t str> {
    let signed = token.untrusted_message();
    let payload = token.untrusted_payload();
    // pasetors cut the payload off the message's last 64 bytes; take them back here.
    let sig: &[u8; SIG_LEN] = signed
        .get(payload.len()..)
        .and_then(|s| s.try_into().ok())?;
    let message = pae(&[
        PublicToken::HEADER.as_bytes(),
        payload,
        token.untrusted_footer(),
        implicit,
    ]);
    key.verify_strict(&message, &Signature::from_bytes(sig))
        .ok()?;
    std::str::from_utf8(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};

    fn dalek(public: &AsymmetricPublicKey<V4>) -> VerifyingKey {
        VerifyingKey::from_bytes(public.as_bytes().try_into().unwrap()).unwrap()
    }

    /// Both verifiers' answers for `token`: ours, and pasetors' (`PublicToken::verify`).
    fn both(
        public: &AsymmetricPublicKey<V4>,
        token: &str,
        implicit: &[u8],
    ) -> (Option<String>, Option<String>) {
        // Every token these tests build parses: an answer of (None, None) must come from the
        // verifiers, not from a token neither of them saw.
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).expect("the token parses");
        let ours = verify(&dalek(public), &untrusted, implicit).map(str::to_string);
        let theirs = PublicToken::verify(public, &untrusted, None, Some(implicit))
            .ok()
            .map(|t| t.payload().to_string());
        (ours, theirs)
    }

    #[test]
    fn pae_matches_the_specification() {
        // PASETO's "Pre-Authentication Encoding" examples.
        assert_eq!(hex::encode(pae(&[])), "0000000000000000");
        assert_eq!(hex::encode(pae(&[b""])), "01000000000000000000000000000000");
        assert_eq!(
            hex::encode(pae(&[b"test"])),
            "0100000000000000040000000000000074657374"
        );
    }

    /// The PASETO v4.public test vectors 4-S-1 (no footer), 4-S-2 (a footer) and 4-S-3 (an
    /// implicit assertion), from the PASETO specification's `vectors/v4.json`.
    #[test]
    fn paseto_test_vectors_verify() {
        let key = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
        let public = AsymmetricPublicKey::<V4>::from(&hex::decode(key).unwrap()).unwrap();
        let payload = r#"{"data":"this is a signed message","exp":"2022-01-01T00:00:00+00:00"}"#;
        let vectors: [(&str, &[u8]); 3] = [
            (
                "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-P0V54zemZDcAxFaSeef1QlXEFtkqxT1ciiQEDA",
                b"",
            ),
            (
                "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9v3Jt8mx_TdM2ceTGoqwrh4yDFn0XsHvvV_D0DtwQxVrJEBMl0F2caAdgnpKlt4p7xBnx1HcO-SPo8FPp214HDw.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9",
                b"",
            ),
            (
                "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9NPWciuD3d0o5eXJXG5pJy-DiVEoyPYWs1YSTwWHNJq6DZD3je5gf-0M4JR9ipdUSJbIovzmBECeaWmaqcaP0DQ.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9",
                br#"{"test-vector":"4-S-3"}"#,
            ),
        ];
        for (token, implicit) in vectors {
            let (ours, theirs) = both(&public, token, implicit);
            assert_eq!(ours.as_deref(), Some(payload), "{token}");
            assert_eq!(ours, theirs);
            // The implicit assertion is signed: another one (ours is always empty) fails.
            let other: &[u8] = if implicit.is_empty() { b"x" } else { b"" };
            assert_eq!(both(&public, token, other), (None, None), "{token}");
        }
    }

    /// Signs `message` (any bytes, UTF-8 or not) as a v4.public token with pasetors.
    fn sign(secret: &AsymmetricSecretKey<V4>, message: &[u8], footer: &[u8]) -> String {
        PublicToken::sign(
            secret,
            message,
            Some(footer).filter(|f| !f.is_empty()),
            None,
        )
        .unwrap()
    }

    /// Re-encodes a token with its decoded message and footer changed by `edit`.
    fn altered(token: &str, edit: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let mut message = b64.decode(parts[2]).unwrap();
        let mut footer = parts.get(3).map_or(Vec::new(), |f| b64.decode(f).unwrap());
        edit(&mut message, &mut footer);
        let mut out = format!("v4.public.{}", b64.encode(&message));
        if !footer.is_empty() {
            out.push('.');
            out.push_str(&b64.encode(&footer));
        }
        out
    }

    /// ed25519-dalek and pasetors (ed25519-compact) give the same answer for tokens signed
    /// by the right key, by another key, and altered in every byte of message, signature and
    /// footer; a payload that is not UTF-8 fails both even when its signature is good.
    #[test]
    fn agrees_with_pasetors_on_good_altered_and_wrongly_keyed_tokens() {
        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let other = AsymmetricKeyPair::<V4>::generate().unwrap();
        let payload = br#"{"jti":"tok_1","sub":"agent_1","tid":"default-tenant","iat":"2026-12-02T00:00:00Z","nbf":"2026-12-02T00:00:00Z","exp":"2026-12-02T01:00:00Z"}"#;
        let footer = br#"{"kid":"k0123456789abcdef"}"#;
        let token = sign(&pair.secret, payload, footer);
        let good = both(&pair.public, &token, b"");
        assert_eq!(good.0.as_deref().map(str::as_bytes), Some(&payload[..]));
        assert_eq!(good.0, good.1);
        assert_eq!(both(&other.public, &token, b""), (None, None));
        assert_eq!(
            both(&pair.public, &sign(&pair.secret, payload, b""), b"")
                .0
                .as_deref()
                .map(str::as_bytes),
            Some(&payload[..])
        );

        let mut checked = 0;
        let message_len = payload.len() + SIG_LEN;
        for at in 0..message_len + footer.len() {
            for bit in 0u8..8 {
                let bad = altered(&token, |m, f| {
                    if at < message_len {
                        m[at] ^= 1 << bit;
                    } else {
                        f[at - message_len] ^= 1 << bit;
                    }
                });
                let answers = both(&pair.public, &bad, b"");
                assert_eq!(answers.0, answers.1, "byte {at} bit {bit}");
                assert_eq!(answers.0, None, "byte {at} bit {bit} verified");
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * (message_len + footer.len()));

        // Cut or grown: the signature is always the message's last 64 bytes.
        for bad in [
            altered(&token, |m, _| {
                m.pop();
            }),
            altered(&token, |m, _| m.push(0)),
            altered(&token, |m, _| m.truncate(SIG_LEN + 1)),
            altered(&token, |_, f| f.clear()),
        ] {
            assert_eq!(both(&pair.public, &bad, b""), (None, None), "{bad}");
        }

        // A malleated signature (S + L, the same point equation) is refused by both.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let malleated = altered(&token, |m, _| {
            let s = &mut m[payload.len() + 32..];
            let mut carry = 0u16;
            for (b, l) in s.iter_mut().zip(l) {
                let sum = u16::from(*b) + u16::from(l) + carry;
                *b = sum as u8;
                carry = sum >> 8;
            }
        });
        assert_ne!(malleated, token);
        assert_eq!(both(&pair.public, &malleated, b""), (None, None));

        // Validly signed bytes that are not UTF-8: refused by both.
        let not_utf8 = sign(&pair.secret, b"{\"jti\":\"\xff\xfe\"}", footer);
        assert_eq!(both(&pair.public, &not_utf8, b""), (None, None));
    }

    /// The one intended difference: a signature whose `R` carries a small-order component
    /// (only the key's holder can make one) passes ed25519-compact's check, which tolerates
    /// a small-order remainder, and fails ours, which checks the cofactorless equation.
    #[test]
    fn a_signature_off_by_a_small_order_point_is_refused() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_TABLE, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest, Sha512};

        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let (seed, public) = pair.secret.as_bytes().split_at(32);
        let mut h: [u8; 64] = Sha512::digest(seed).into();
        h[0] &= 248;
        h[31] &= 127;
        h[31] |= 64;
        let a = Scalar::from_bytes_mod_order(h[..32].try_into().unwrap());
        assert_eq!((&a * ED25519_BASEPOINT_TABLE).compress().as_bytes(), public);

        let payload = br#"{"jti":"tok_1","sub":"agent_1"}"#;
        let footer = br#"{"kid":"k0123456789abcdef"}"#;
        let signed = pae(&[PublicToken::HEADER.as_bytes(), payload, footer, b""]);
        let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(b"a nonce").into());
        let big_r = (&r * ED25519_BASEPOINT_TABLE + EIGHT_TORSION[1]).compress();
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(public)
                .chain_update(&signed)
                .finalize()
                .into(),
        );
        let s = r + k * a;
        let mut message = payload.to_vec();
        message.extend_from_slice(big_r.as_bytes());
        message.extend_from_slice(s.as_bytes());
        let token = altered(&sign(&pair.secret, payload, footer), |m, _| *m = message);

        let (ours, theirs) = both(&pair.public, &token, b"");
        assert_eq!(theirs.as_deref().map(str::as_bytes), Some(&payload[..]));
        assert_eq!(ours, None);
    }
}
