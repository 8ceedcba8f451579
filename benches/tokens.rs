//! Token verification: a cache hit, a cache miss (parsing through pasetors, the signature
//! checked with ed25519-dalek, the claims, the cache insert), and — measured in the same run
//! — one bare ed25519-dalek verification of a message of the same length, the floor a miss
//! cannot beat, beside ed25519-compact's (pasetors' own verifier, used before) and ring's of
//! the same message.
//!
//! ```text
//! cargo bench --bench tokens
//! ```
//! Targets (DESIGN.md §6): hit ≤ 150 ns; miss ≤ 1.5× the bare verification.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actgate::token::{KeySet, Tokens, now_unix};
use criterion::{Criterion, criterion_group, criterion_main};

fn setup() -> (Tokens, String) {
    let tokens = Tokens::new(KeySet::ephemeral(), 100_000, Duration::from_secs(30), 64);
    let (token, _) = tokens
        .issue(
            "agent_57d2845e984cb6bf1229b64f3b1172f7",
            "default-tenant",
            Duration::from_secs(3600),
            None,
            now_unix(),
        )
        .unwrap();
    (tokens, token)
}

fn bare() -> (
    ed25519_compact::PublicKey,
    Vec<u8>,
    ed25519_compact::Signature,
) {
    let kp = ed25519_compact::KeyPair::generate();
    // PASETO signs PAE(header, payload, footer, implicit): about the token's length.
    let msg = vec![0x5a_u8; 260];
    let sig = kp.sk.sign(&msg, None);
    (kp.pk, msg, sig)
}

fn bench(c: &mut Criterion) {
    let (tokens, token) = setup();
    tokens.authenticate_blocking(&token).unwrap();
    let mut g = c.benchmark_group("token");
    g.bench_function("cache_hit", |b| {
        b.iter(|| tokens.authenticate_blocking(black_box(&token)).unwrap())
    });
    let uncached = Tokens::new(KeySet::ephemeral(), 0, Duration::from_secs(30), 64);
    let (fresh, _) = uncached
        .issue(
            "agent_57d2845e984cb6bf1229b64f3b1172f7",
            "default-tenant",
            Duration::from_secs(3600),
            None,
            now_unix(),
        )
        .unwrap();
    g.bench_function("cache_miss", |b| {
        b.iter(|| uncached.authenticate_blocking(black_box(&fresh)).unwrap())
    });
    let (pk, msg, sig) = bare();
    let dalek_pk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let dalek_sig = ed25519_dalek::Signature::from_bytes(&sig);
    // The floor a miss cannot beat: the verification a miss runs.
    g.bench_function("bare_ed25519_dalek_verify", |b| {
        b.iter(|| dalek_pk.verify_strict(black_box(&msg), &dalek_sig).unwrap())
    });
    g.finish();

    // One-run summary with ratios.
    let time = |n: u32, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed().as_nanos() as f64 / n as f64
    };
    let hit = time(2_000_000, &mut || {
        black_box(tokens.authenticate_blocking(black_box(&token)).unwrap());
    });
    let miss = time(20_000, &mut || {
        black_box(uncached.authenticate_blocking(black_box(&fresh)).unwrap());
    });
    let floor = time(20_000, &mut || {
        dalek_pk.verify_strict(black_box(&msg), &dalek_sig).unwrap()
    });
    let compact = time(20_000, &mut || pk.verify(black_box(&msg), &sig).unwrap());
    let ring_pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk.as_ref());
    let ring = time(20_000, &mut || {
        ring_pk.verify(black_box(&msg), sig.as_ref()).unwrap();
    });
    println!();
    println!("| path | ns | target |");
    println!("|---|---:|---|");
    println!("| cache hit | {hit:.0} | ≤ 150 ns |");
    println!(
        "| cache miss (verify + parse) | {miss:.0} | ≤ 1.5× bare = {:.0} ns |",
        floor * 1.5
    );
    println!("| bare Ed25519 verify (ed25519-dalek, what a miss runs) | {floor:.0} | |");
    println!("| miss / bare | {:.2}× | ≤ 1.5× |", miss / floor);
    println!(
        "| ed25519-compact's verify, same message (pasetors' own) | {compact:.0} | compact / dalek {:.2}× |",
        compact / floor
    );
    println!(
        "| ring's verify, same message | {ring:.0} | ring / dalek {:.2}× |",
        ring / floor
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
