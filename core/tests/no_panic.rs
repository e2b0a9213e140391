//! No parser panics: every parser of untrusted bytes in the core (DSSE
//! envelopes, each statement's payload, signed notes, checkpoints,
//! tlog-proofs, note verifier keys) and the full verification paths built on
//! them (`envelope::verify`, `note::open_checkpoint`, `TlogProof::verify`,
//! `TrustedRoot::provision`) are fed at least 10,000 random and mutated
//! inputs each, and must answer every one with a value or an error.
//!
//! Inputs come from a deterministic PRNG (splitmix64) seeded per parser and
//! per iteration, so a failure reproduces: the panic report names the parser,
//! the iteration and the input. The seeds are valid objects built from the
//! crate's own types; mutations include bit flips, byte insertions and
//! deletions, truncation at every offset, duplicated slices, splices of two
//! seeds, JSON values swapped for other types, huge numbers, deep nesting and
//! long strings, and, for notes, stray em dashes, newlines and `+` signs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope::{self, Envelope, EnvelopeError};
use covenant_core::keys::{KeyId, KeySet, PublicKey, SigningKey};
use covenant_core::merkle::{self, Hash, MemoryTree};
use covenant_core::note::{self, Checkpoint, Note, NoteSignature, NoteSigner, NoteVerifier, TlogProof};
use covenant_core::root::{RootPolicy, TrustedRoot};
use covenant_core::statements::{
    ATTESTATION_SUBJECT_PREFIX, ActionKind, AdminAction, Artifact, CaseState, CheckIn, CheckpointRef, Condition,
    ConditionResult, ConditionStatus, Contract, ContractRef, Decision, DeniedParty, Determination, EndUse,
    EndUseAttestation, EndUser, FieldVerification, Freshness, FreshnessStanding, IdentityRole, InTotoStatement,
    InstallOutcome, InstallReport, Licence, MisuseSignal, Payload, ReleaseClass, ReleaseManifest, RoleSpec, Roles,
    RootKey, RootMetadata, SchemaV1, SignalAbout, SignalSource, Signatory, Site, Subject, SubjectDigest,
    SuspensionLevel, SuspensionTarget, Undertakings, Verdict, VerificationMethod, VerificationResult, WithheldRelease,
    deployment_subject, is_valid_id,
};
use serde_json::Value;

/// Random inputs per parser, on top of the exhaustive truncations of the seeds.
const ITERATIONS: usize = 10_000;
/// The minimum number of inputs each parser must see.
const MIN_RUNS: usize = 10_000;

const LOG_NAME: &str = "log.example/covenant";
const WITNESS_1: &str = "witness.example/w1";
const WITNESS_2: &str = "witness.example/w2";

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// splitmix64: small, fast and good enough to drive a fuzzer.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    /// The generator for iteration `i` of the parser salted `salt`, so any
    /// single iteration can be replayed on its own.
    fn for_iteration(salt: u64, i: usize) -> Self {
        let mut r = Rng(0x5EED_C0DE_2026_0001 ^ salt.rotate_left(17) ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length biased towards small values, below `max`.
    fn len(&mut self, max: usize) -> usize {
        if self.chance(50) { self.below(max.min(17)) } else { self.below(max) }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// An interesting u64: edges, powers of two and their neighbours, or random.
    fn interesting_u64(&mut self) -> u64 {
        match self.below(6) {
            0 => *self.pick(&[0, 1, 2, 3, 7, 8, 13, 255, 256, u64::MAX, u64::MAX - 1, i64::MAX as u64, 1 << 63]),
            1 => 1u64 << self.below(64),
            2 => (1u64 << self.below(64)).wrapping_sub(1),
            3 => (1u64 << self.below(64)).wrapping_add(1),
            4 => self.below(100) as u64,
            _ => self.next_u64(),
        }
    }
}

// ---------------------------------------------------------------------------
// Mutation.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Note,
}

#[rustfmt::skip]
const JSON_TOKENS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\udc00", "\\u", "null", "true", "false", "0",
    "-0", "1e999", "-1", "1.5", "18446744073709551616", "\"_type\"", "\"schema\"", ":1", ",\"zzz\":1", "\"\":\"\"",
    "\u{2014}", "\u{feff}", "\n", " ", "\t", "\r", "==", "=", "+", "-", "/", "_", "é", "\u{1F600}", "\u{0}",
];

#[rustfmt::skip]
const NOTE_TOKENS: &[&str] = &[
    "\u{2014} ", "\u{2014}", "\u{2013} ", "\n", "\n\n", "\n\n\n", "+", "++", " ", "  ", "\u{a0}", "\u{85}",
    "\u{2028}", "\t", "\r", "\r\n", "\u{0}", "=", "==", "/", "0", "00", "-1", "18446744073709551615",
    "18446744073709551616", "99999999999999999999999", "c2sp.org/tlog-proof@v1\n", "extra ", "extra \n", "index ",
    "index 0\n", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "AAAA", "A", "é", "\u{1F600}", "\u{ffff}",
    "cosignature/v1\n", "time 0\n", "log.example/covenant", "\u{2014} log.example/covenant ",
    "\u{2014} witness.example/w1 ",
];

/// Raw JSON texts that replace a value of a seed.
#[rustfmt::skip]
const JSON_VALUES: &[&str] = &[
    "null", "true", "false", "0", "-0", "1", "2", "-1", "1.5", "1e400", "-1e400", "1E2",
    "0.0000000000000000000000000000001", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "18446744073709551615", "18446744073709551616",
    "99999999999999999999999999999999999999999999", "\"\"", "\" \"", "\"x\"", "\"\\u0000\"", "\"\\ud800\"",
    "\"\\ud83d\\ude00\"", "\"\\n\\t\\\"\"", "\"\u{2014}\"", "\"é\"", "[]", "{}", "[null]", "[1,2,3]", "[\"x\"]",
    "{\"a\":1}", "{\"what\":\"note\",\"text\":\"x\"}", "{\"what\":\"approve\"}", "{\"verdict\":\"current\"}",
    "{\"verdict\":\"standing\",\"index\":18446744073709551615,\"leaf_hash\":\"00\",\"checkpoint_size\":0}",
    "{\"customer\":\"acme\"}", "{\"deployment\":\"x\"}", "{\"customer\":\"a\",\"deployment\":\"b\"}",
    "\"urn:covenant:deployment:\"", "\"urn:covenant:deployment:dep-1\"", "\"urn:covenant:attestation:\"", "\"1.0.0\"",
    "\"0.0.0\"", "\"0.0.0-\"", "\"1.2.3-alpha.1+build.5\"", "\"18446744073709551616.0.0\"",
    "\"18446744073709551615.18446744073709551615.18446744073709551615\"", "\"1.0\"", "\"v1.0.0\"",
    "\"1970-01-01T00:00:00Z\"", "\"9999-12-31T23:59:59Z\"", "\"0000-01-01T00:00:00Z\"", "\"2026-02-30T00:00:00Z\"",
    "\"2026-10-01T00:00:60Z\"", "\"2026-10-01T24:00:00Z\"", "\"2026-10-01T00:00:00+23:59\"",
    "\"9999-12-31T23:59:59-23:59\"", "\"0000-01-01T00:00:00+23:59\"", "\"2026-10-01T00:00:00.999999999Z\"",
    "\"2026-10-01T00:00:00.9999999999999999999999Z\"", "\"2026-10-01\"",
    "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
    "\"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"",
    "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85\"",
    "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555\"",
    "\"é3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85\"",
    "\"0000000000000000000000000000000000000000000000000000000000000000\"",
    "\"0100000000000000000000000000000000000000000000000000000000000000\"",
    "\"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f\"",
    "\"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa\"", "\"AAAA\"", "\"AA==\"", "\"A\"",
    "\"_-_-\"", "\"====\"", "\"a+b\"", "\"a b\"", "\"-\"", "\".\"", "\"DE\"", "\"de\"", "\"D\"", "\"ÄÖ\"", "\"none\"",
    "\"L1\"", "\"L3\"", "\"legal-hold\"", "\"grant\"", "\"withhold\"", "\"capability\"", "\"security-fix\"",
    "\"determined\"", "\"closed\"", "\"substantiated\"", "\"met\"", "\"unmet\"", "\"not-applicable\"", "\"fail\"",
    "\"pass\"", "\"on-site\"", "\"rolled-back\"", "\"root\"", "\"release\"", "\"action\"", "\"signal\"",
    "\"checkin\"", "\"report\"", "\"decision\"", "\"fresh\"", "\"https://in-toto.io/Statement/v1\"",
    "\"urn:covenant:end-use:v1\"", "\"urn:covenant:field-verification:v1\"",
    "\"application/vnd.covenant.release.v1+json\"", "\"application/vnd.in-toto+json\"",
];

/// A raw JSON value: one of [`JSON_VALUES`] or a generated one (deep nesting,
/// long strings, long arrays, huge numbers).
fn raw_json_value(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => {
            let d = *rng.pick(&[2, 64, 127, 128, 129, 200, 1000, 5000]);
            if rng.chance(50) {
                format!("{}{}", "[".repeat(d), "]".repeat(d))
            } else {
                format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d))
            }
        }
        1 => {
            let n = *rng.pick(&[63, 64, 65, 100, 1000, 5000, 70_000]);
            let c = *rng.pick(&["a", "0", "\u{2014}", "\\n", "é"]);
            format!("\"{}\"", c.repeat(n))
        }
        2 => {
            let n = *rng.pick(&[2, 33, 65, 1025, 3000]);
            let item = *rng.pick(&["1", "\"x\"", "null", "{}", "[]"]);
            format!("[{}]", vec![item; n].join(","))
        }
        3 => {
            let digits = 1 + rng.below(400);
            let mut s: String = (0..digits).map(|_| char::from(b'0' + rng.below(10) as u8)).collect();
            if rng.chance(30) {
                s.insert(0, '-');
            }
            if rng.chance(20) {
                s.push_str(".5e");
                s.push_str(&rng.below(1000).to_string());
            }
            s
        }
        4 => rng.interesting_u64().to_string(),
        _ => (*rng.pick(JSON_VALUES)).to_owned(),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`th node of `v` in preorder.
fn nth_node<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => {
            for c in a.iter_mut() {
                if let Some(x) = nth_node(c, n) {
                    return Some(x);
                }
            }
            None
        }
        Value::Object(o) => {
            for c in o.values_mut() {
                if let Some(x) = nth_node(c, n) {
                    return Some(x);
                }
            }
            None
        }
        _ => None,
    }
}

fn random_node(v: &Value, rng: &mut Rng) -> Value {
    let mut v = v.clone();
    let mut n = rng.below(count_nodes(&v));
    nth_node(&mut v, &mut n).map(|x| x.take()).unwrap_or(Value::Null)
}

const PLACEHOLDER: &str = "@@covenant-fuzz-placeholder@@";

/// One structural mutation of a JSON document: a value replaced by raw text
/// of any type, a key removed, added, renamed or duplicated, an array element
/// removed or repeated, or a value transplanted from another seed.
fn mutate_json_once(doc: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(doc).ok()?;
    let other: Value = serde_json::from_slice(other).unwrap_or(Value::Null);
    let mut n = rng.below(count_nodes(&v));
    let node = nth_node(&mut v, &mut n)?;
    let mut raw = None;
    match rng.below(8) {
        0..=2 => {
            *node = Value::String(PLACEHOLDER.to_owned());
            raw = Some(raw_json_value(rng));
        }
        3 => match node {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).cloned().unwrap_or_default();
                o.remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                a.remove(rng.below(a.len()));
            }
            other_value => *other_value = Value::Null,
        },
        4 => match node {
            Value::Object(o) => {
                let key = rng.pick(&["zzz", "_type", "", "Schema", "payloadType", "keyid", "what"]).to_string();
                let value = random_node(&other, rng);
                o.insert(key, value);
            }
            Value::Array(a) => {
                let copies = *rng.pick(&[1, 2, 31, 32, 33, 64, 65, 1025]);
                let item = if a.is_empty() { random_node(&other, rng) } else { a[rng.below(a.len())].clone() };
                for _ in 0..copies {
                    a.push(item.clone());
                }
            }
            other_value => *other_value = random_node(&other, rng),
        },
        5 => match node {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).cloned().unwrap_or_default();
                let value = o.remove(&k).unwrap_or(Value::Null);
                let renamed = match rng.below(4) {
                    0 => k.to_uppercase(),
                    1 => format!("{k}x"),
                    2 => k.chars().skip(1).collect(),
                    _ => format!(" {k}"),
                };
                o.insert(renamed, value);
            }
            other_value => *other_value = random_node(&other, rng),
        },
        6 => *node = random_node(&other, rng),
        _ => {
            // Mutate a string value in place (ids, versions, times, digests, base64).
            if let Value::String(s) = node {
                let mut bytes = s.clone().into_bytes();
                match rng.below(5) {
                    0 => {
                        let i = rng.below(bytes.len() + 1);
                        bytes.truncate(i);
                    }
                    1 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len());
                        bytes[i] = *rng.pick(b"0123456789abcdefABCDEF-+_. /:=Zz");
                    }
                    2 => {
                        let i = rng.below(bytes.len() + 1);
                        let tok = rng.pick(&["-", "+", ".", " ", "\u{2014}", "0", "9", "é", "\n", "=="]);
                        bytes.splice(i..i, tok.bytes());
                    }
                    3 => {
                        // A base64 string: decode, mutate the decoded bytes, re-encode.
                        if let Ok(mut decoded) = STANDARD.decode(&bytes) {
                            mutate_bytes(&mut decoded, &[], Format::Json, rng);
                            bytes = STANDARD.encode(decoded).into_bytes();
                        }
                    }
                    _ => {
                        let copy = bytes.clone();
                        bytes.extend_from_slice(&copy);
                    }
                }
                *s = String::from_utf8_lossy(&bytes).into_owned();
            } else {
                *node = Value::String(PLACEHOLDER.to_owned());
                raw = Some(raw_json_value(rng));
            }
        }
    }
    let mut text = serde_json::to_string(&v).ok()?;
    if let Some(raw) = raw {
        text = text.replacen(&format!("\"{PLACEHOLDER}\""), &raw, 1);
    }
    if rng.chance(5) {
        // A duplicate key at the top level.
        if let Some(k) = v.as_object().and_then(|o| o.keys().next().cloned()) {
            let dup = format!("{{{}:{},", serde_json::to_string(&k).ok()?, raw_json_value(rng));
            text = text.replacen('{', &dup, 1);
        }
    }
    Some(text.into_bytes())
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return Vec::new();
    }
    (0..=haystack.len() - needle.len()).filter(|&i| &haystack[i..i + needle.len()] == needle).collect()
}

/// One byte-level mutation.
fn mutate_bytes(buf: &mut Vec<u8>, seeds: &[Vec<u8>], format: Format, rng: &mut Rng) {
    let tokens = match format {
        Format::Json => JSON_TOKENS,
        Format::Note => NOTE_TOKENS,
    };
    let len = buf.len();
    match rng.below(15) {
        0 if len > 0 => {
            let i = rng.below(len);
            buf[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            buf[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.len(32);
            let bytes = rng.bytes(n);
            buf.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.len(len - i);
            buf.drain(i..(i + n).min(len));
        }
        4 => buf.truncate(rng.below(len + 1)),
        5 if len > 0 => {
            // Duplicate a slice somewhere.
            let a = rng.below(len);
            let b = a + 1 + rng.len(len - a);
            let slice = buf[a..b.min(len)].to_vec();
            let at = rng.below(len + 1);
            let times = if rng.chance(10) { 1 + rng.below(100) } else { 1 };
            for _ in 0..times {
                buf.splice(at..at, slice.iter().copied());
            }
        }
        6 if !seeds.is_empty() => {
            // Splice: a prefix of this, the suffix of another seed.
            let other = rng.pick(seeds);
            let i = rng.below(len + 1);
            let j = rng.below(other.len() + 1);
            buf.truncate(i);
            buf.extend_from_slice(&other[j..]);
        }
        7 | 8 => {
            let i = rng.below(len + 1);
            let tok = rng.pick(tokens);
            buf.splice(i..i, tok.bytes());
        }
        9 => {
            // Replace one occurrence of a token with another.
            let from = rng.pick(tokens).as_bytes();
            let hits = find_all(buf, from);
            if !hits.is_empty() {
                let at = *rng.pick(&hits);
                let to = rng.pick(tokens);
                buf.splice(at..at + from.len(), to.bytes());
            }
        }
        10 => {
            // Replace a digit, or grow a run of digits.
            let digits: Vec<usize> = (0..len).filter(|&i| buf[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let i = *rng.pick(&digits);
                if rng.chance(50) {
                    buf[i] = b'0' + rng.below(10) as u8;
                } else {
                    let run = rng.pick(&["0", "9", "99999999999999999999", "18446744073709551616", "00"]);
                    buf.splice(i..i, run.bytes());
                }
            }
        }
        11 => {
            // Line operations: delete, duplicate, swap, replace.
            let mut lines: Vec<Vec<u8>> = buf.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let n = lines.len();
            let i = rng.below(n);
            match rng.below(4) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    let times = if rng.chance(10) { 70 } else { 1 };
                    for _ in 0..times {
                        lines.insert(i, l.clone());
                    }
                }
                2 => lines.swap(i, rng.below(n)),
                _ => lines[i] = rng.pick(tokens).as_bytes().to_vec(),
            }
            *buf = lines.join(&b'\n');
        }
        12 => {
            // A base64 word (a signature, a hash, a payload): decode, change, re-encode.
            let words: Vec<(usize, usize)> = {
                let mut out = Vec::new();
                let mut start = 0;
                for (i, &b) in buf.iter().chain(std::iter::once(&b' ')).enumerate() {
                    if matches!(b, b' ' | b'\n' | b'"') {
                        if i > start {
                            out.push((start, i));
                        }
                        start = i + 1;
                    }
                }
                out
            };
            let decodable: Vec<(usize, usize, Vec<u8>)> = words
                .into_iter()
                .filter_map(|(a, b)| STANDARD.decode(&buf[a..b]).ok().filter(|d| !d.is_empty()).map(|d| (a, b, d)))
                .collect();
            if !decodable.is_empty() {
                let (a, b, mut d) = decodable[rng.below(decodable.len())].clone();
                match rng.below(4) {
                    0 => {
                        let i = rng.below(d.len());
                        d[i] ^= 1 << rng.below(8);
                    }
                    1 => d.truncate(rng.below(d.len())),
                    2 => {
                        let n = rng.below(80);
                        d.extend(rng.bytes(n));
                    }
                    _ => {
                        let n = rng.len(120);
                        d = rng.bytes(n);
                    }
                }
                buf.splice(a..b, STANDARD.encode(d).bytes());
            }
        }
        13 => {
            let i = rng.below(len + 1);
            let b = *rng
                .pick(&[0x00, 0xff, 0x7f, 0x80, 0xc3, 0xe2, 0x80, 0x94, b'\n', b' ', b'+', b'"', b'\\', b'{', b'}']);
            if i < len && rng.chance(50) {
                buf[i] = b;
            } else {
                buf.insert(i, b);
            }
        }
        _ if !seeds.is_empty() => {
            // Concatenate with a seed (two notes, two documents).
            let other = rng.pick(seeds).clone();
            if rng.chance(50) {
                buf.extend_from_slice(&other);
            } else {
                buf.splice(0..0, other);
            }
        }
        _ => {}
    }
}

/// One input for a parser: random bytes, random text over the format's
/// alphabet, or a seed with structural and byte-level mutations.
fn generate(seeds: &[Vec<u8>], format: Format, rng: &mut Rng) -> Vec<u8> {
    let roll = rng.below(100);
    if roll < 6 {
        let n = rng.below(2048);
        return rng.bytes(n);
    }
    if roll < 10 {
        let n = rng.below(2048);
        let tokens = match format {
            Format::Json => JSON_TOKENS,
            Format::Note => NOTE_TOKENS,
        };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if rng.chance(50) {
                out.extend_from_slice(rng.pick(tokens).as_bytes());
            } else {
                out.push(*rng.pick(b"abcdefxyz0123456789 +/=-_.:\n{}[]\","));
            }
        }
        return out;
    }
    let mut buf = rng.pick(seeds).clone();
    if format == Format::Json && rng.chance(55) {
        for _ in 0..1 + rng.below(3) {
            let other = rng.pick(seeds).clone();
            match mutate_json_once(&buf, &other, rng) {
                Some(m) => buf = m,
                None => break,
            }
        }
        if rng.chance(70) {
            return buf;
        }
    }
    let ops = 1 + if rng.chance(70) { rng.below(2) } else { rng.below(8) };
    for _ in 0..ops {
        mutate_bytes(&mut buf, seeds, format, rng);
    }
    buf
}

// ---------------------------------------------------------------------------
// The harness.

/// Prints the parser, the iteration and the input if a parser panics.
struct Witness<'a> {
    parser: &'a str,
    iteration: &'a str,
    input: &'a [u8],
}

impl Drop for Witness<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let shown: Vec<u8> = self.input.iter().copied().take(4096).collect();
            eprintln!(
                "PANIC in parser {} at {} on {} input bytes (first 4096, escaped):\n{}",
                self.parser,
                self.iteration,
                self.input.len(),
                shown.escape_ascii()
            );
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    seeds: usize,
    accepted: usize,
    refused: usize,
}

impl Tally {
    fn check(&self, name: &str, min_refused_percent: usize, started: Instant) {
        eprintln!(
            "{name}: {} inputs ({} seeds accepted; of the rest {} accepted, {} refused) in {:.2?}",
            self.runs,
            self.seeds,
            self.accepted,
            self.refused,
            started.elapsed()
        );
        assert!(self.runs >= MIN_RUNS, "{name}: only {} inputs", self.runs);
        assert!(self.seeds > 0, "{name}: no seed");
        assert!(
            self.refused * 100 >= min_refused_percent * (self.accepted + self.refused),
            "{name}: only {} of {} mutated inputs refused",
            self.refused,
            self.accepted + self.refused
        );
    }
}

/// Feeds `parse` every seed (each must be accepted), every truncation of
/// every seed, and [`ITERATIONS`] generated inputs. `parse` says whether
/// the input was accepted.
fn fuzz(
    name: &str,
    salt: u64,
    seeds: &[Vec<u8>],
    format: Format,
    min_refused_percent: usize,
    mut parse: impl FnMut(&[u8]) -> bool,
) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    for (i, seed) in seeds.iter().enumerate() {
        let label = format!("seed {i}");
        let _w = Witness { parser: name, iteration: &label, input: seed };
        assert!(parse(seed), "{name}: valid seed {i} refused: {}", seed.escape_ascii());
        tally.seeds += 1;
        tally.runs += 1;
    }
    let record = |tally: &mut Tally, ok: bool| {
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    };
    for (s, seed) in seeds.iter().enumerate() {
        for cut in 0..seed.len() {
            let label = format!("truncation of seed {s} at {cut}");
            let input = &seed[..cut];
            let _w = Witness { parser: name, iteration: &label, input };
            let ok = parse(input);
            record(&mut tally, ok);
        }
    }
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(salt, i);
        let input = generate(seeds, format, &mut rng);
        let label = format!("iteration {i} (salt {salt:#x})");
        let _w = Witness { parser: name, iteration: &label, input: &input };
        let ok = parse(&input);
        record(&mut tally, ok);
    }
    tally.check(name, min_refused_percent, started);
    tally
}

// ---------------------------------------------------------------------------
// Valid seeds.

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn ver(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

fn d(s: &str) -> Sha256Digest {
    Sha256Digest::of(s.as_bytes())
}

fn root_metadata(version: u64, development: bool) -> RootMetadata {
    let rk = |n: u8, name: Option<&str>| RootKey { public: key(n).public(), note_name: name.map(str::to_owned) };
    let witness = if development {
        RoleSpec { keys: vec![], threshold: 0 }
    } else {
        RoleSpec { keys: vec![rk(7, Some(WITNESS_1)), rk(8, Some(WITNESS_2))], threshold: 1 }
    };
    RootMetadata {
        type_tag: Default::default(),
        schema: SchemaV1,
        version,
        expires: t("2030-01-01T00:00:00Z"),
        development,
        roles: Roles {
            root: RoleSpec { keys: vec![rk(1, None), rk(12, None)], threshold: 1 },
            release: RoleSpec { keys: vec![rk(2, None), rk(3, None), rk(4, None)], threshold: 2 },
            decision: RoleSpec { keys: vec![rk(5, None)], threshold: 1 },
            ledger: RoleSpec { keys: vec![rk(6, Some(LOG_NAME))], threshold: 1 },
            witness,
            admin: RoleSpec { keys: vec![rk(9, None), rk(10, None)], threshold: 2 },
        },
    }
}

fn releases() -> Vec<ReleaseManifest> {
    vec![
        ReleaseManifest {
            type_tag: Default::default(),
            schema: SchemaV1,
            product: "lim".into(),
            version: ver("2.1.0"),
            class: ReleaseClass::SecurityFix,
            capability_baseline: ver("2.0.0"),
            artifact: Artifact { name: "lim-2.1.0.tar.gz".into(), sha256: d("artifact"), size: 1234 },
            expected_installed_digests: BTreeMap::from([
                ("/opt/lim/bin/lim".to_owned(), d("bin")),
                ("/opt/lim/etc/lim.conf".to_owned(), d("conf")),
            ]),
            released_at: t("2026-03-01T12:00:00Z"),
        },
        ReleaseManifest {
            type_tag: Default::default(),
            schema: SchemaV1,
            product: "dpi".into(),
            version: ver("3.0.0-rc.1+build.7"),
            class: ReleaseClass::Capability,
            capability_baseline: ver("3.0.0-rc.1+build.7"),
            artifact: Artifact { name: "dpi.img".into(), sha256: d("dpi"), size: u64::MAX },
            expected_installed_digests: BTreeMap::new(),
            released_at: t("2026-04-01T00:00:00Z"),
        },
    ]
}

fn actions() -> Vec<AdminAction> {
    let kinds = vec![
        ActionKind::Note { text: "authority notified".into() },
        ActionKind::IssueIdentity {
            role: IdentityRole::Auditor,
            subject: "auditor-1".into(),
            signing_key: key(11).public(),
            certificate_sha256: d("cert"),
            scope: Some(vec!["acme".into(), "globex".into()]),
        },
        ActionKind::RevokeIdentity {
            certificate_sha256: d("cert"),
            compromised_since: Some(t("2026-05-01T00:00:00Z")),
        },
        ActionKind::CaseTransition {
            case: "case-7".into(),
            to: CaseState::Determined,
            determination: Some(Determination::Substantiated),
        },
        ActionKind::ProposeSuspension { target: SuspensionTarget::Customer("acme".into()), level: SuspensionLevel::L2 },
        ActionKind::ProposeSuspension {
            target: SuspensionTarget::Deployment("dep-1".into()),
            level: SuspensionLevel::LegalHold,
        },
        ActionKind::Approve { proposal: d("proposal") },
        ActionKind::RegisterCustomer {
            customer: "acme".into(),
            legal_name: "Acme Ministry".into(),
            country: "XA".into(),
        },
        ActionKind::RegisterDeployment {
            deployment: "dep-2".into(),
            customer: "acme".into(),
            product: "lim".into(),
            site: Site { country: "XA".into(), site_id: "s1".into() },
            provisioned_version: "1.0.0".parse().unwrap(),
        },
        ActionKind::SetContract {
            contract: Contract {
                id: "contract-acme".into(),
                version: 1,
                customer: "acme".into(),
                deployments: vec![],
                conditions: vec![
                    Condition::EndUseAttested {
                        max_age_days: 365,
                        allowed_end_uses: vec!["lawful-interception".into()],
                    },
                    Condition::FieldVerified { max_age_days: 90, methods: vec![VerificationMethod::OnSite] },
                    Condition::SiteBound { allowed_countries: vec!["XA".into()], allowed_site_ids: vec![] },
                    Condition::IntegrityMatch,
                    Condition::LicenceValid { licence: "lic-1".into() },
                    Condition::DeniedPartyClear { list: "eu-sanctions".into() },
                    Condition::NoOpenCase { from_state: CaseState::Triaged },
                ],
                grant_validity_seconds: 86_400,
                compliance_contact: "compliance@vendor.example".into(),
            },
        },
        ActionKind::ProposeWaiver {
            deployment: "dep-1".into(),
            condition: "field_verified".into(),
            until: t("2026-09-01T00:00:00Z"),
        },
        ActionKind::ProposeSecurityFix { deployment: "dep-1".into(), release: d("release") },
        ActionKind::ListDeniedParty {
            party: DeniedParty {
                list: "eu-sanctions".into(),
                legal_name: "Acme Ministry".into(),
                country: "XA".into(),
            },
        },
        ActionKind::RecordLicence {
            licence: Licence {
                id: "lic-1".into(),
                customer: "acme".into(),
                authority: "BAFA".into(),
                expires: t("2027-01-01T00:00:00Z"),
                versions: ">=1.0, <3".parse().unwrap(),
            },
        },
    ];
    kinds
        .into_iter()
        .map(|action| AdminAction {
            type_tag: Default::default(),
            schema: SchemaV1,
            action,
            why: "per case 7".into(),
            evidence: vec![d("evidence")],
            issued_at: t("2026-05-02T00:00:00Z"),
        })
        .collect()
}

fn signals() -> Vec<MisuseSignal> {
    vec![
        MisuseSignal {
            type_tag: Default::default(),
            schema: SchemaV1,
            about: SignalAbout { customer: "acme".into(), deployment: Some("dep-1".into()) },
            source: SignalSource::NgoReport,
            summary: "journalists targeted".into(),
            evidence: vec![d("report.pdf")],
            reported_at: t("2026-05-01T00:00:00Z"),
        },
        MisuseSignal {
            type_tag: Default::default(),
            schema: SchemaV1,
            about: SignalAbout { customer: "globex".into(), deployment: None },
            source: SignalSource::Other,
            summary: "x".into(),
            evidence: vec![],
            reported_at: t("1970-01-01T00:00:00Z"),
        },
    ]
}

fn checkins() -> Vec<CheckIn> {
    vec![
        CheckIn {
            type_tag: Default::default(),
            schema: SchemaV1,
            deployment: "dep-1".into(),
            product: "lim".into(),
            installed_version: ver("2.1.0"),
            installed_baseline: ver("2.0.0"),
            software_digests: BTreeMap::from([("/opt/lim/bin/lim".to_owned(), d("bin"))]),
            configuration_digest: d("config"),
            last_checkpoint: Some(CheckpointRef { size: 42, root_hash: d("root") }),
            nonce: d("nonce"),
            time: t("2026-06-01T00:00:00Z"),
        },
        CheckIn {
            type_tag: Default::default(),
            schema: SchemaV1,
            deployment: "dep-2".into(),
            product: "dpi".into(),
            installed_version: ver("1.0.0"),
            installed_baseline: ver("1.0.0"),
            software_digests: BTreeMap::new(),
            configuration_digest: d("config2"),
            last_checkpoint: None,
            nonce: d("nonce2"),
            time: t("2026-06-01T00:00:00Z"),
        },
    ]
}

fn reports() -> Vec<InstallReport> {
    vec![InstallReport {
        type_tag: Default::default(),
        schema: SchemaV1,
        deployment: "dep-1".into(),
        grant_index: 7,
        outcome: InstallOutcome::RolledBack,
        from_version: ver("2.0.0"),
        to_version: ver("2.1.0"),
        last_checkpoint: CheckpointRef { size: 42, root_hash: d("root") },
        time: t("2026-06-02T00:00:00Z"),
    }]
}

fn decisions() -> Vec<Decision> {
    let checkin = envelope::sign(&checkins()[0], &[&key(11)]);
    let withheld = vec![WithheldRelease {
        release: d("release-3"),
        version: ver("3.0.0"),
        reasons: vec!["end use not attested".into()],
    }];
    vec![
        Decision {
            type_tag: Default::default(),
            schema: SchemaV1,
            deployment: "dep-1".into(),
            verdict: Verdict::Grant,
            release: Some(d("release-2.1.0")),
            withheld_above: withheld.clone(),
            conditions: vec![
                ConditionResult {
                    condition: "integrity_match".into(),
                    status: ConditionStatus::Met,
                    reason: "".into(),
                },
                ConditionResult {
                    condition: "end_use_attested".into(),
                    status: ConditionStatus::Unmet,
                    reason: "attestation expired".into(),
                },
            ],
            suspension: SuspensionLevel::None,
            checkin: checkin.clone(),
            contract: Some(ContractRef { id: "contract-1".into(), version: 3 }),
            policy_version: 1,
            state_size: 100,
            issued_at: t("2026-06-01T00:00:01Z"),
            expires_at: Some(t("2026-07-01T00:00:00Z")),
            finding: None,
            courier: None,
        },
        Decision {
            type_tag: Default::default(),
            schema: SchemaV1,
            deployment: "dep-1".into(),
            verdict: Verdict::Withhold,
            release: None,
            withheld_above: withheld,
            conditions: vec![],
            suspension: SuspensionLevel::L1,
            checkin,
            contract: None,
            policy_version: 1,
            state_size: 101,
            issued_at: t("2026-06-01T00:00:01Z"),
            expires_at: None,
            finding: None,
            courier: None,
        },
    ]
}

fn freshness() -> Vec<Freshness> {
    vec![
        Freshness {
            type_tag: Default::default(),
            schema: SchemaV1,
            deployment: "dep-1".into(),
            nonce: d("nonce"),
            time: t("2026-06-01T00:00:01Z"),
            standing: FreshnessStanding::Current,
        },
        Freshness {
            type_tag: Default::default(),
            schema: SchemaV1,
            deployment: "dep-1".into(),
            nonce: d("nonce"),
            time: t("2026-06-01T00:00:01Z"),
            standing: FreshnessStanding::Standing { index: 5, leaf_hash: d("leaf"), checkpoint_size: 10 },
        },
    ]
}

fn attestations() -> Vec<InTotoStatement<EndUseAttestation>> {
    let predicate = EndUseAttestation {
        customer: "acme".into(),
        end_user: EndUser { legal_name: "Federal Police".into(), agency_type: "police".into(), country: "DE".into() },
        end_use: EndUse { category: "lawful-interception".into(), description: "court-ordered interception".into() },
        legal_basis: "StPO §100a".into(),
        oversight_body: "Amtsgericht".into(),
        sites: vec![
            Site { country: "DE".into(), site_id: "site-1".into() },
            Site { country: "AT".into(), site_id: "site-2".into() },
        ],
        undertakings: Undertakings {
            no_reexport_transfer_or_relocation: true,
            no_modification: true,
            no_targeting_of_protected_groups: true,
            consent_to_audits_and_site_checks: true,
        },
        facts_unknown_to_signer: "".into(),
        signatory: Signatory { name: "A. Person".into(), title: "Director".into() },
        valid_from: t("2026-01-01T00:00:00Z"),
        valid_until: t("2027-01-01T00:00:00Z"),
    };
    vec![
        InTotoStatement::new(vec![deployment_subject("dep-1")], predicate.clone()),
        InTotoStatement::new(vec![deployment_subject("dep-1"), deployment_subject("dep-2")], predicate),
    ]
}

fn field_verifications() -> Vec<InTotoStatement<FieldVerification>> {
    let attestation = Sha256Digest::of(&attestations()[0].to_payload_bytes());
    let subjects = vec![
        Subject {
            name: format!("{ATTESTATION_SUBJECT_PREFIX}{attestation}"),
            digest: SubjectDigest { sha256: attestation },
        },
        deployment_subject("dep-1"),
    ];
    let pass = FieldVerification {
        attestation,
        deployment: "dep-1".into(),
        method: VerificationMethod::OnSite,
        observed_site: Site { country: "DE".into(), site_id: "site-1".into() },
        observed_configuration_digest: d("config"),
        result: VerificationResult::Pass,
        findings: "".into(),
        date: t("2026-03-01T00:00:00Z"),
    };
    let fail = FieldVerification {
        method: VerificationMethod::Remote,
        result: VerificationResult::Fail,
        findings: "a second site".into(),
        ..pass.clone()
    };
    vec![InTotoStatement::new(subjects.clone(), pass), InTotoStatement::new(subjects, fail)]
}

fn payloads<T: Payload>(items: &[T]) -> Vec<Vec<u8>> {
    items.iter().map(Payload::to_payload_bytes).collect()
}

/// Every statement kind's payload type and valid payloads.
fn all_payloads() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        (RootMetadata::PAYLOAD_TYPE, payloads(&[root_metadata(1, false), root_metadata(2, true)])),
        (ReleaseManifest::PAYLOAD_TYPE, payloads(&releases())),
        (AdminAction::PAYLOAD_TYPE, payloads(&actions())),
        (MisuseSignal::PAYLOAD_TYPE, payloads(&signals())),
        (CheckIn::PAYLOAD_TYPE, payloads(&checkins())),
        (InstallReport::PAYLOAD_TYPE, payloads(&reports())),
        (Decision::PAYLOAD_TYPE, payloads(&decisions())),
        (Freshness::PAYLOAD_TYPE, payloads(&freshness())),
        // Both in-toto predicates share the payload type.
        (InTotoStatement::<EndUseAttestation>::PAYLOAD_TYPE, payloads(&attestations())),
        (InTotoStatement::<FieldVerification>::PAYLOAD_TYPE, payloads(&field_verifications())),
    ]
}

fn signed(payload_type: &str, payload: &[u8], keys: &[&SigningKey]) -> Vec<u8> {
    let mut e = Envelope::new(payload_type, payload.to_vec());
    for k in keys {
        e.sign(k);
    }
    e.to_bytes()
}

/// Valid envelopes of every statement kind, with 0 to 3 signatures.
fn envelope_seeds() -> Vec<Vec<u8>> {
    let (k2, k3, k4) = (key(2), key(3), key(4));
    let mut out = Vec::new();
    for (i, (payload_type, items)) in all_payloads().into_iter().enumerate() {
        for payload in items {
            let keys: Vec<&SigningKey> = [&k2, &k3, &k4].into_iter().take(i % 4).collect();
            out.push(signed(payload_type, &payload, &keys));
        }
    }
    // URL-safe base64 and an empty key id are allowed on the wire.
    let url_safe = format!(
        r#"{{"payloadType":"application/x","payload":"{}","signatures":[{{"sig":"{}"}}]}}"#,
        base64::engine::general_purpose::URL_SAFE.encode([0xfb, 0xff, 0xfe]),
        base64::engine::general_purpose::URL_SAFE.encode([0xff; 64])
    );
    out.push(url_safe.into_bytes());
    out
}

/// The log, its two witnesses, a tree of 13 entries and its cosigned checkpoint.
struct Log {
    log: NoteSigner,
    witnesses: [NoteSigner; 2],
    tree: MemoryTree,
}

impl Log {
    fn new() -> Self {
        let mut tree = MemoryTree::new();
        for i in 0..13u32 {
            tree.push_leaf(format!("entry {i}").as_bytes());
        }
        Log {
            log: NoteSigner::new(LOG_NAME, key(6)).unwrap(),
            witnesses: [NoteSigner::new(WITNESS_1, key(7)).unwrap(), NoteSigner::new(WITNESS_2, key(8)).unwrap()],
            tree,
        }
    }

    fn checkpoint(&self, extensions: &[&str]) -> Checkpoint {
        Checkpoint {
            origin: LOG_NAME.into(),
            size: self.tree.size(),
            root_hash: self.tree.root(),
            extensions: extensions.iter().map(|&e| e.to_owned()).collect(),
        }
    }

    fn cosigned(&self, cp: &Checkpoint, witnesses: usize) -> Note {
        let mut n = cp.sign(&self.log).unwrap();
        let text = n.text().to_owned();
        for (i, w) in self.witnesses.iter().take(witnesses).enumerate() {
            n.push_signature(w.cosign(&text, 1_700_000_000 + i as u64).unwrap());
        }
        n
    }

    /// Signed notes: plain, cosigned, with extensions, with a foreign signature.
    fn note_seeds(&self) -> Vec<Vec<u8>> {
        let mut out = vec![
            self.cosigned(&self.checkpoint(&[]), 0).to_text().into_bytes(),
            self.cosigned(&self.checkpoint(&[]), 2).to_text().into_bytes(),
            self.cosigned(&self.checkpoint(&["ext one", "\u{2014} ext+two"]), 1).to_text().into_bytes(),
        ];
        let mut foreign = self.cosigned(&self.checkpoint(&[]), 1);
        foreign.push_signature(NoteSigner::new("other.example/log", key(30)).unwrap().sign(foreign.text()).unwrap());
        out.push(foreign.to_text().into_bytes());
        out
    }

    fn verifier(&self) -> NoteVerifier {
        self.log.verifier()
    }

    fn witness_verifiers(&self) -> Vec<NoteVerifier> {
        self.witnesses.iter().map(NoteSigner::cosignature_verifier).collect()
    }

    fn proof(&self, index: u64, extra: Option<&[u8]>, witnesses: usize) -> TlogProof {
        TlogProof {
            extra: extra.map(<[u8]>::to_vec),
            index,
            proof: merkle::inclusion_proof(&self.tree, index, self.tree.size()).unwrap(),
            checkpoint: self.cosigned(&self.checkpoint(&[]), witnesses).to_text(),
        }
    }

    fn proof_seeds(&self) -> Vec<Vec<u8>> {
        vec![
            self.proof(5, Some(b"extra data"), 2).to_text().into_bytes(),
            self.proof(12, None, 1).to_text().into_bytes(),
            self.proof(0, Some(b""), 0).to_text().into_bytes(),
        ]
    }

    fn leaf(&self, index: u64) -> Hash {
        self.tree.leaf_hash(index).unwrap_or([0; 32])
    }
}

// ---------------------------------------------------------------------------
// Parsers of bytes.

#[test]
fn envelope_parser_never_panics() {
    fuzz("Envelope::parse", 0xE1, &envelope_seeds(), Format::Json, 40, |b| Envelope::parse(b).is_ok());
}

fn fuzz_payload<T: Payload>(name: &str, salt: u64, items: &[T]) {
    // Payloads are mutated both on their own and wrapped in nothing else.
    fuzz(name, salt, &payloads(items), Format::Json, 60, |b| T::parse(b).is_ok());
}

#[test]
fn root_payload_parser_never_panics() {
    fuzz_payload("RootMetadata::parse", 0x101, &[root_metadata(1, false), root_metadata(7, true)]);
}

#[test]
fn release_payload_parser_never_panics() {
    fuzz_payload("ReleaseManifest::parse", 0x102, &releases());
}

#[test]
fn action_payload_parser_never_panics() {
    fuzz_payload("AdminAction::parse", 0x103, &actions());
}

#[test]
fn signal_payload_parser_never_panics() {
    fuzz_payload("MisuseSignal::parse", 0x104, &signals());
}

#[test]
fn checkin_payload_parser_never_panics() {
    fuzz_payload("CheckIn::parse", 0x105, &checkins());
}

#[test]
fn install_report_payload_parser_never_panics() {
    fuzz_payload("InstallReport::parse", 0x106, &reports());
}

#[test]
fn decision_payload_parser_never_panics() {
    fuzz_payload("Decision::parse", 0x107, &decisions());
}

#[test]
fn freshness_payload_parser_never_panics() {
    fuzz_payload("Freshness::parse", 0x108, &freshness());
}

#[test]
fn end_use_attestation_payload_parser_never_panics() {
    fuzz_payload("InTotoStatement<EndUseAttestation>::parse", 0x109, &attestations());
}

#[test]
fn field_verification_payload_parser_never_panics() {
    fuzz_payload("InTotoStatement<FieldVerification>::parse", 0x10A, &field_verifications());
}

#[test]
fn signed_note_parser_never_panics() {
    let log = Log::new();
    let mut seeds = log.note_seeds();
    seeds.push(b"hello\n\n\xe2\x80\x94 a AAAAAAE=\n".to_vec());
    fuzz("Note::parse", 0x201, &seeds, Format::Note, 60, |b| match Note::parse(b) {
        Ok(n) => {
            // What parses re-encodes, and its lines parse again.
            for s in n.signatures() {
                let line = s.to_line();
                assert_eq!(NoteSignature::parse_line(line.trim_end_matches('\n')).as_ref(), Ok(s));
            }
            true
        }
        Err(_) => false,
    });
}

#[test]
fn checkpoint_parser_never_panics() {
    let log = Log::new();
    let mut seeds: Vec<Vec<u8>> =
        log.note_seeds().iter().map(|n| Note::parse(n).unwrap().text().as_bytes().to_vec()).collect();
    seeds.push(b"o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".to_vec());
    seeds.push(b"o\n18446744073709551615\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nx\n".to_vec());
    fuzz("Checkpoint::parse_text", 0x202, &seeds, Format::Note, 60, |b| {
        // The parser takes text; invalid UTF-8 becomes replacement characters.
        Checkpoint::parse_text(&String::from_utf8_lossy(b)).is_ok()
    });
}

#[test]
fn tlog_proof_parser_never_panics() {
    let log = Log::new();
    fuzz("TlogProof::parse", 0x203, &log.proof_seeds(), Format::Note, 40, |b| match TlogProof::parse(b) {
        Ok(p) => {
            assert_eq!(TlogProof::parse(p.to_text().as_bytes()).as_ref(), Ok(&p));
            true
        }
        Err(_) => false,
    });
}

#[test]
fn note_verifier_key_parser_never_panics() {
    let log = Log::new();
    let mut seeds: Vec<Vec<u8>> = vec![log.verifier().to_string().into_bytes()];
    seeds.extend(log.witness_verifiers().iter().map(|v| v.to_string().into_bytes()));
    // PRIVATE+KEY+name+keyid+base64(0x01 || seed), as the Go note package writes them.
    let mut raw = vec![note::TYPE_ED25519];
    raw.extend_from_slice(&[6; 32]);
    let private = format!("PRIVATE+KEY+{LOG_NAME}+{:08x}+{}", log.verifier().id(), STANDARD.encode(&raw));
    seeds.push(private.into_bytes());
    fuzz("NoteVerifier::parse / NoteSigner::parse_private", 0x204, &seeds, Format::Note, 60, |b| {
        let s = String::from_utf8_lossy(b);
        let verifier = NoteVerifier::parse(&s);
        if let Ok(v) = &verifier {
            assert_eq!(NoteVerifier::parse(&v.to_string()).as_ref(), Ok(v));
        }
        let signer = NoteSigner::parse_private(&s);
        verifier.is_ok() || signer.is_ok()
    });
}

#[test]
fn key_digest_and_time_parsers_never_panic() {
    let seeds: Vec<Vec<u8>> = vec![
        key(1).public().to_bytes().to_vec(),
        hex::encode(key(1).public().to_bytes()).into_bytes(),
        key(1).key_id().to_string().into_bytes(),
        d("x").to_string().into_bytes(),
        b"2026-10-01T02:00:00+02:00".to_vec(),
        b"1970-01-01T00:00:00.5Z".to_vec(),
    ];
    fuzz("PublicKey/KeyId/Sha256Digest/Timestamp parsers", 0x205, &seeds, Format::Note, 50, |b| {
        let s = String::from_utf8_lossy(b);
        let mut ok = PublicKey::from_bytes(b).is_ok();
        ok |= PublicKey::from_hex(&s).is_ok();
        ok |= KeyId::from_hex(&s).is_some();
        ok |= Sha256Digest::from_hex(&s).is_some();
        if let Some(ts) = Timestamp::parse_rfc3339(&s) {
            // Display and date never panic, even far from the epoch.
            let _ = (ts.to_string(), ts.date(), ts.plus_seconds(i64::MAX), ts.plus_seconds(i64::MIN));
            ok = true;
        }
        let _ = (is_valid_id(&s), note::is_valid_key_name(&s));
        ok
    });
}

// ---------------------------------------------------------------------------
// Full verification paths.

/// Runs `envelope::verify::<T>` for every statement type; true if any accepted.
fn verify_all(bytes: &[u8], keys: &KeySet) -> bool {
    fn one<T: Payload>(bytes: &[u8], keys: &KeySet) -> bool {
        match envelope::verify::<T>(bytes, keys) {
            Ok(v) => {
                // A verified payload re-verifies and its digest is its bytes'.
                assert_eq!(v.payload_digest(), Sha256Digest::of(v.payload()));
                assert!(v.signers().len() >= keys.threshold() as usize);
                true
            }
            Err(_) => false,
        }
    }
    [
        one::<RootMetadata>(bytes, keys),
        one::<ReleaseManifest>(bytes, keys),
        one::<AdminAction>(bytes, keys),
        one::<MisuseSignal>(bytes, keys),
        one::<CheckIn>(bytes, keys),
        one::<InstallReport>(bytes, keys),
        one::<Decision>(bytes, keys),
        one::<Freshness>(bytes, keys),
        one::<InTotoStatement<EndUseAttestation>>(bytes, keys),
        one::<InTotoStatement<FieldVerification>>(bytes, keys),
    ]
    .contains(&true)
}

#[test]
fn envelope_verify_never_panics() {
    let (k2, k3, k4, stranger) = (key(2), key(3), key(4), key(40));
    let keys = KeySet::new([k2.public(), k3.public(), k4.public()], 2).unwrap();
    let typed = all_payloads();
    // A device's statements, and a person's attestations, verifications and
    // signals, carry one signature (their own limit), so they are seeded
    // signed by one key and checked against a threshold of one.
    let one_key = KeySet::new([k2.public(), k3.public(), k4.public()], 1).unwrap();
    let device = |t: &str| {
        t == CheckIn::PAYLOAD_TYPE
            || t == InstallReport::PAYLOAD_TYPE
            || t == MisuseSignal::PAYLOAD_TYPE
            || t == InTotoStatement::<EndUseAttestation>::PAYLOAD_TYPE
    };
    let mut seeds = Vec::new();
    let mut seed_keys = Vec::new();
    for (payload_type, items) in &typed {
        for payload in items {
            if device(payload_type) {
                seeds.push(signed(payload_type, payload, &[&k2]));
                seed_keys.push(&one_key);
            } else {
                seeds.push(signed(payload_type, payload, &[&k2, &k3]));
                seed_keys.push(&keys);
            }
        }
    }
    let started = Instant::now();
    let mut tally = Tally::default();
    for (i, (seed, keys)) in seeds.iter().zip(&seed_keys).enumerate() {
        let _w = Witness { parser: "envelope::verify", iteration: "seed", input: seed };
        assert!(verify_all(seed, keys), "seed {i} refused");
        tally.seeds += 1;
        tally.runs += 1;
    }
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(0x301, i);
        let input = if rng.chance(45) {
            // A mutated envelope: its signatures no longer match, or it no longer parses.
            generate(&seeds, Format::Json, &mut rng)
        } else {
            // A mutated payload, properly signed, so that the payload parser
            // runs after the signature check.
            let (payload_type, items) = rng.pick(&typed);
            let payload = generate(items, Format::Json, &mut rng);
            let payload_type = if rng.chance(90) { payload_type } else { rng.pick(&typed).0 };
            let signers: Vec<&SigningKey> = match rng.below(10) {
                0 => vec![],
                1 => vec![&k2],
                2 => vec![&k2, &stranger],
                3 => vec![&k2, &k3, &k4],
                _ => vec![&k3, &k4],
            };
            let mut bytes = signed(payload_type, &payload, &signers);
            if rng.chance(10) {
                mutate_bytes(&mut bytes, &seeds, Format::Json, &mut rng);
            }
            bytes
        };
        let label = format!("iteration {i}");
        let _w = Witness { parser: "envelope::verify", iteration: &label, input: &input };
        let ok = verify_all(&input, &keys);
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.check("envelope::verify::<T> (all 10 statement types)", 50, started);
}

#[test]
fn root_provision_never_panics() {
    let (root_key, second_root_key) = (key(1), key(12));
    let now = t("2026-06-01T00:00:00Z");
    let metadata = [root_metadata(1, false), root_metadata(1, true)];
    let payload_seeds: Vec<Vec<u8>> = metadata.iter().map(Payload::to_payload_bytes).collect();
    let seeds: Vec<Vec<u8>> =
        payload_seeds.iter().map(|p| signed(RootMetadata::PAYLOAD_TYPE, p, &[&root_key])).collect();
    let policies = [RootPolicy { allow_development: false }, RootPolicy { allow_development: true }];
    let trusted = TrustedRoot::provision(&seeds[0], now, policies[0]).unwrap();
    let next_seed =
        signed(RootMetadata::PAYLOAD_TYPE, &root_metadata(2, false).to_payload_bytes(), &[&root_key, &second_root_key]);
    assert!(trusted.rotate(&next_seed).is_ok());

    let started = Instant::now();
    let mut tally = Tally::default();
    for (i, seed) in seeds.iter().enumerate() {
        assert!(TrustedRoot::provision(seed, now, policies[1]).is_ok(), "root seed {i} refused");
        tally.seeds += 1;
        tally.runs += 1;
    }
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(0x302, i);
        let input = if rng.chance(40) {
            generate(&seeds, Format::Json, &mut rng)
        } else {
            let payload = generate(&payload_seeds, Format::Json, &mut rng);
            let signers: Vec<&SigningKey> = match rng.below(5) {
                0 => vec![&second_root_key],
                1 => vec![&root_key, &second_root_key],
                _ => vec![&root_key],
            };
            signed(RootMetadata::PAYLOAD_TYPE, &payload, &signers)
        };
        let now = if rng.chance(90) { now } else { Timestamp::from_unix(rng.next_u64() as i64) };
        let policy = *rng.pick(&policies);
        let label = format!("iteration {i}");
        let _w = Witness { parser: "TrustedRoot::provision", iteration: &label, input: &input };
        let ok = match TrustedRoot::provision(&input, now, policy) {
            Ok(root) => {
                // Everything a provisioned root offers works without panicking.
                let _ = (root.release_keys(), root.decision_keys(), root.admin_keys());
                assert!(root.ledger_verifiers().is_ok());
                assert!(root.witness_policy().is_ok());
                true
            }
            Err(_) => false,
        };
        // The same bytes offered as the next root of a trusted one.
        let _ = trusted.rotate(&input);
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.check("TrustedRoot::provision (+ rotate)", 50, started);
}

/// The fold and the policy on hostile entries: payloads mutated and then
/// signed by the key their type needs (so the semantic checks run, not only
/// the signature check), and whole envelopes mutated; each is classified,
/// applied to a state with a customer, a deployment and their keys, and
/// every check-in that verifies is evaluated.
#[test]
fn state_apply_and_evaluate_never_panic() {
    use covenant_core::ledger::{EntryHeader, Keyring, SubjectSecret, body_digest};
    use covenant_core::state::{State, classify};
    let now = t("2026-06-01T00:00:00Z");
    let mut base = State::with_keyring(Keyring::Secret(SubjectSecret::from_bytes([7; 32])));
    let append = |state: &mut State, body: Vec<u8>| {
        let p = classify(&body).unwrap();
        let digest = body_digest(&[0; 32], &body);
        let tags = state.keyring().tags(&p.subjects, &digest).unwrap();
        let header = EntryHeader { kind: p.kind, time: now, actor: p.actor, tags, body_digest: digest };
        state.apply(state.size(), &header, &body).unwrap();
    };
    let admin = key(9);
    append(&mut base, signed(RootMetadata::PAYLOAD_TYPE, &root_metadata(1, false).to_payload_bytes(), &[&key(1)]));
    let act = |what: ActionKind| AdminAction {
        type_tag: Default::default(),
        schema: SchemaV1,
        action: what,
        why: "set-up".into(),
        evidence: vec![],
        issued_at: now,
    };
    let setup = [
        ActionKind::RegisterCustomer { customer: "acme".into(), legal_name: "Acme".into(), country: "XA".into() },
        ActionKind::RegisterDeployment {
            deployment: "dep-1".into(),
            customer: "acme".into(),
            product: "lim".into(),
            site: Site { country: "XA".into(), site_id: "s1".into() },
            provisioned_version: "1.0.0".parse().unwrap(),
        },
    ];
    for what in setup {
        append(&mut base, envelope::sign(&act(what), &[&admin]));
    }
    for (n, role, subject) in [
        (20u8, IdentityRole::Customer, "acme"),
        (21, IdentityRole::Deployment, "dep-1"),
        (22, IdentityRole::Engineer, "eng-1"),
    ] {
        let what = ActionKind::IssueIdentity {
            role,
            subject: subject.into(),
            signing_key: key(n).public(),
            certificate_sha256: d(subject),
            scope: None,
        };
        let issue = act(what);
        append(&mut base, envelope::sign(&issue, &[&admin]));
        // A customer's or engineer's key waits for the second admin.
        if role != IdentityRole::Deployment {
            let proposal = Sha256Digest::of(&issue.to_payload_bytes());
            append(&mut base, envelope::sign(&act(ActionKind::Approve { proposal }), &[&key(10)]));
        }
    }
    for r in releases() {
        append(&mut base, envelope::sign(&r, &[&key(2), &key(3)]));
    }

    // (payload type, payload seeds, the keys that sign them)
    let (release_1, release_2, decision, customer, device, engineer) =
        (key(2), key(3), key(5), key(20), key(21), key(22));
    type Kind<'a> = (&'a str, Vec<Vec<u8>>, Vec<&'a SigningKey>);
    let kinds: Vec<Kind<'_>> = vec![
        (AdminAction::PAYLOAD_TYPE, payloads(&actions()), vec![&admin]),
        (ReleaseManifest::PAYLOAD_TYPE, payloads(&releases()), vec![&release_1, &release_2]),
        (MisuseSignal::PAYLOAD_TYPE, payloads(&signals()), vec![&engineer]),
        (Decision::PAYLOAD_TYPE, payloads(&decisions()), vec![&decision]),
        (InstallReport::PAYLOAD_TYPE, payloads(&reports()), vec![&device]),
        ("application/vnd.in-toto+json", payloads(&attestations()), vec![&customer]),
        ("application/vnd.in-toto+json", payloads(&field_verifications()), vec![&engineer]),
        (CheckIn::PAYLOAD_TYPE, payloads(&checkins()), vec![&device]),
    ];
    let envelope_seeds: Vec<Vec<u8>> =
        kinds.iter().flat_map(|(ty, ps, keys)| ps.iter().map(|p| signed(ty, p, keys))).collect();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut applied = 0;
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(0x501, i);
        let input = if rng.chance(70) {
            let (ty, ps, keys) = rng.pick(&kinds);
            let payload = if rng.chance(20) { rng.pick(ps).clone() } else { generate(ps, Format::Json, &mut rng) };
            signed(ty, &payload, keys)
        } else {
            generate(&envelope_seeds, Format::Json, &mut rng)
        };
        let label = format!("iteration {i}");
        let _w = Witness { parser: "State::apply / evaluate", iteration: &label, input: &input };
        let mut ok = false;
        if let Ok(p) = classify(&input) {
            let digest = body_digest(&[0; 32], &input);
            let Ok(tags) = base.keyring().tags(&p.subjects, &digest) else { continue };
            let header = EntryHeader { kind: p.kind, time: now, actor: p.actor, tags, body_digest: digest };
            let mut state = base.clone();
            ok = state.apply(state.size(), &header, &input).is_ok();
            applied += usize::from(ok);
        }
        if let Ok(checkin) = base.verify_checkin(&input) {
            ok = true;
            let _ = covenant_core::policy::evaluate(&base, &checkin, now);
        }
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.seeds = 1;
    eprintln!("{applied} entries applied");
    assert!(applied > 100, "the fuzzer reaches the semantic checks: {applied} entries applied");
    tally.check("State::apply / evaluate", 50, started);
}

#[test]
fn open_checkpoint_never_panics() {
    let log = Log::new();
    let verifier = log.verifier();
    let witnesses = log.witness_verifiers();
    let witness_refs: Vec<&NoteVerifier> = witnesses.iter().collect();
    let seeds = log.note_seeds();
    let trusted = note::open_checkpoint(&seeds[0], &verifier).unwrap().accept_first();
    let started = Instant::now();
    let mut tally = Tally::default();
    for seed in &seeds {
        assert!(note::open_checkpoint(seed, &verifier).is_ok());
        tally.seeds += 1;
        tally.runs += 1;
    }
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(0x303, i);
        let input = match rng.below(10) {
            0..=4 => generate(&seeds, Format::Note, &mut rng),
            5..=7 => {
                // A mutated checkpoint text, properly signed by the log, with
                // cosignatures over it (or over something else).
                let text = Note::parse(rng.pick(&seeds).as_slice()).unwrap().text().as_bytes().to_vec();
                let mutated = generate(&[text], Format::Note, &mut rng);
                let text = String::from_utf8_lossy(&mutated).into_owned();
                match Note::new(&text) {
                    Ok(mut n) => {
                        n.push_signature(log.log.sign(&text).unwrap());
                        for w in log.witnesses.iter().take(rng.below(3)) {
                            let over = if rng.chance(80) { text.clone() } else { format!("{text}x\n") };
                            n.push_signature(w.cosign(&over, rng.interesting_u64()).unwrap());
                        }
                        n.to_text().into_bytes()
                    }
                    Err(_) => mutated,
                }
            }
            _ => {
                // Well-formed signature lines under known names and key ids
                // with signature bytes of any length.
                let mut n = log.cosigned(&log.checkpoint(&[]), 0);
                let v = if rng.chance(50) { &witnesses[rng.below(2)] } else { &verifier };
                let len = rng.len(100);
                n.push_signature(NoteSignature { name: v.name().to_owned(), key_id: v.id(), sig: rng.bytes(len) });
                n.to_text().into_bytes()
            }
        };
        let label = format!("iteration {i}");
        let _w = Witness { parser: "note::open_checkpoint", iteration: &label, input: &input };
        let ok = match note::open_checkpoint(&input, &verifier) {
            Ok(cp) => {
                let threshold = rng.below(4);
                let _ = cp.require_cosignatures(&witness_refs, threshold);
                let proof: Vec<Hash> = (0..rng.len(70)).map(|_| rng.bytes(32).try_into().unwrap()).collect();
                let _ = trusted.advance(cp, &proof);
                true
            }
            Err(_) => false,
        };
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.check("note::open_checkpoint (+ require_cosignatures, advance)", 50, started);
}

#[test]
fn tlog_proof_verify_never_panics() {
    let log = Log::new();
    let verifier = log.verifier();
    let seeds = log.proof_seeds();
    let started = Instant::now();
    let mut tally = Tally::default();
    for seed in &seeds {
        let p = TlogProof::parse(seed).unwrap();
        assert!(p.verify(&log.leaf(p.index), &verifier).is_ok());
        tally.seeds += 1;
        tally.runs += 1;
    }
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(0x304, i);
        let input = if rng.chance(60) {
            generate(&seeds, Format::Note, &mut rng)
        } else {
            // A properly signed checkpoint of any size and root, with any
            // index and proof length: the Merkle verifier sees wild numbers.
            let size = rng.interesting_u64();
            let root = if rng.chance(50) { log.tree.root() } else { rng.bytes(32).try_into().unwrap() };
            let cp = Checkpoint { origin: LOG_NAME.into(), size, root_hash: root, extensions: vec![] };
            let index = if rng.chance(50) { rng.interesting_u64() } else { size.wrapping_sub(1 + rng.below(3) as u64) };
            let proof = if size == log.tree.size() && index < size && rng.chance(50) {
                merkle::inclusion_proof(&log.tree, index, size).unwrap()
            } else {
                (0..rng.len(66)).map(|_| rng.bytes(32).try_into().unwrap()).collect()
            };
            TlogProof { extra: None, index, proof, checkpoint: cp.sign(&log.log).unwrap().to_text() }
                .to_text()
                .into_bytes()
        };
        let label = format!("iteration {i}");
        let _w = Witness { parser: "TlogProof::verify", iteration: &label, input: &input };
        let ok = match TlogProof::parse(&input) {
            Ok(p) => {
                let leaf = if rng.chance(80) { log.leaf(p.index) } else { rng.bytes(32).try_into().unwrap() };
                p.verify(&leaf, &verifier).is_ok()
            }
            Err(_) => false,
        };
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.check("TlogProof::parse + verify", 50, started);
}

#[test]
fn merkle_verifiers_never_panic_on_wild_sizes() {
    let log = Log::new();
    let root = log.tree.root();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut inner = MemoryTree::new();
    for i in 0..log.tree.size() {
        inner.push_hash(log.leaf(i));
        let (m, n) = (inner.size(), log.tree.size());
        let proof = merkle::consistency_proof(&log.tree, m, n).unwrap();
        assert!(merkle::verify_consistency(m, n, &proof, &inner.root(), &root).is_ok());
        tally.seeds += 1;
        tally.runs += 1;
    }
    for i in 0..ITERATIONS {
        let mut rng = Rng::for_iteration(0x305, i);
        let (a, b) = (rng.interesting_u64(), rng.interesting_u64());
        let proof: Vec<Hash> = (0..rng.len(130)).map(|_| rng.bytes(32).try_into().unwrap()).collect();
        let leaf: Hash = rng.bytes(32).try_into().unwrap();
        let ok = merkle::verify_inclusion(a, b, &leaf, &proof, &root).is_ok()
            | merkle::root_from_inclusion(a, b, &leaf, &proof).is_ok()
            | merkle::verify_consistency(a, b, &proof, &leaf, &root).is_ok();
        tally.runs += 1;
        if ok {
            tally.accepted += 1;
        } else {
            tally.refused += 1;
        }
    }
    tally.check("merkle::verify_inclusion / root_from_inclusion / verify_consistency", 50, started);
}

// ---------------------------------------------------------------------------
// Deep nesting.

#[test]
fn deep_json_nesting_is_an_error_not_a_stack_overflow() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let deep_open = |n: usize| "[".repeat(n).into_bytes();
    let deep_objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes();

    // The envelope itself: 100k nested arrays, and nesting inside each field.
    for bytes in [
        deep(100_000),
        deep_open(100_000),
        deep_objects(100_000),
        [b"{\"payloadType\":".as_slice(), &deep(100_000), b"}"].concat(),
        [b"{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":".as_slice(), &deep(100_000), b"}"].concat(),
        [b"{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[{\"sig\":".as_slice(), &deep_open(100_000)].concat(),
        [b"{\"zzz\":".as_slice(), &deep(100_000), b"}"].concat(),
    ] {
        assert!(matches!(Envelope::parse(&bytes), Err(EnvelopeError::Malformed(_))));
    }

    // Payloads: nesting within each statement's size limit (and one above
    // it), everywhere a value may go, must be refused as malformed.
    fn refused<T: Payload>(label: &str) {
        for depth in [128, 1_000, T::MAX_BYTES / 2 - 16, 100_000] {
            let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let open = "[".repeat(depth);
            for bytes in [
                nest.clone(),
                open.clone(),
                format!("{{\"_type\":{nest}}}"),
                format!("{{\"_type\":{open}"),
                format!("{{\"schema\":1,\"zzz\":{nest}}}"),
            ] {
                let result = T::parse(bytes.as_bytes());
                assert!(result.is_err(), "{label}: deep nesting of {depth} accepted");
            }
        }
    }
    refused::<RootMetadata>("root");
    refused::<ReleaseManifest>("release");
    refused::<AdminAction>("action");
    refused::<MisuseSignal>("signal");
    refused::<CheckIn>("checkin");
    refused::<InstallReport>("report");
    refused::<Decision>("decision");
    refused::<Freshness>("freshness");
    refused::<InTotoStatement<EndUseAttestation>>("end-use");
    refused::<InTotoStatement<FieldVerification>>("field verification");

    // Nesting inside a field that holds a list or a map, past the signature
    // check: a properly signed envelope of a deeply nested payload.
    let k = key(2);
    let keys = KeySet::single(k.public());
    let mut payload: Value = serde_json::from_slice(&releases()[0].to_payload_bytes()).unwrap();
    payload["expected_installed_digests"] = Value::String(PLACEHOLDER.into());
    let text = serde_json::to_string(&payload).unwrap();
    for depth in [128, 10_000, 30_000] {
        for raw in [
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
        ] {
            let bytes = text.replacen(&format!("\"{PLACEHOLDER}\""), &raw, 1);
            let env = signed(ReleaseManifest::PAYLOAD_TYPE, bytes.as_bytes(), &[&k]);
            let result = envelope::verify::<ReleaseManifest>(&env, &keys);
            assert!(matches!(result, Err(EnvelopeError::Payload(_))), "depth {depth}: {result:?}");
        }
    }

    // serde_json's recursion limit (128) is what stops it: 127 levels still
    // parse as a plain `Value`, 128 do not.
    assert!(serde_json::from_slice::<Value>(&deep(127)).is_ok());
    assert!(serde_json::from_slice::<Value>(&deep(128)).is_err());
}
