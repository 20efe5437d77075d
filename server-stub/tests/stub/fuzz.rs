//! A bounded mutation fuzzer over the parsers that read what strangers send: key files (all three
//! formats), certificate requests, HTTP Basic credentials, the alternate-keys header, the inventory
//! body, every admin JSON body, session cookies and Bearer headers, and the device connector's
//! frames.
//!
//! No nightly toolchain is at hand for cargo-fuzz, so this is a small driver of its own: it starts
//! from valid inputs, applies random byte-level mutations (flips, inserts, deletions, repeats,
//! splices of another seed), and runs each target under `catch_unwind`. A target must never panic,
//! and what it accepts must hold its promises (a parsed key file writes back to what parses the
//! same; an accepted inventory is within its bounds; a refusal never quotes a key). Each target runs
//! for `ONBOARD_FUZZ_SECONDS` (default 2) from a fixed seed, or `ONBOARD_FUZZ_SEED`, and must have
//! run at least [`MIN_INPUTS`] inputs in that time: a run too short (or a machine too slow) to
//! fuzz anything fails rather than passing with nothing tried.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use onboard_protocol::inventory::MAX_INVENTORY_BYTES;
use onboard_protocol::{
    Fingerprint, FirstAuthKey, Format, Inventory, KeyEntry, KeyFile, Limits, Nic, Server,
};

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting bytes for the formats at hand.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"&",
    b"&amp;",
    b"&#x0;",
    b"<!DOCTYPE x [<!ENTITY a \"b\">]>",
    b"\"",
    b"'",
    b"\r\n",
    b"\0",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b":",
    b",",
    b"{",
    b"}",
    b"[",
    b"]",
    b"Part 1:",
    b"Host:",
    b"\x30\x82\xff\xff",
    b"\x02\x01\x00",
    b"\x06\x08",
    b"Basic ",
    b"==",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if !input.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(64)).min(input.len());
                let chunk = input[start..end].to_vec();
                for _ in 0..1 + rng.below(4) {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(256)).min(other.len());
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            _ => input.truncate(at),
        }
    }
    input.truncate(256 * 1024);
}

/// The fewest inputs a target must run for its test to pass (about a fifth of what the slowest
/// target, the key-file readers, runs in 2 s of an unoptimised build on this project's CI).
const MIN_INPUTS: u64 = 2_000;

/// Runs `target` on mutations of `seeds` for the configured time; panics with the input (hex)
/// that made the target panic or break a promise, or when fewer than [`MIN_INPUTS`] ran. Returns
/// how many inputs it ran.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) -> Result<(), String>) -> u64 {
    let seconds: u64 = std::env::var("ONBOARD_FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("ONBOARD_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, &mut input, &seeds);
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(broken)) => Some(broken),
                Err(_) => Some("panicked".to_owned()),
            };
            if let Some(failure) = failure {
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                panic!("{name}: {failure} on input {hex}");
            }
            runs += 1;
        }
    }
    println!("fuzz {name}: {runs} inputs in {seconds} s, seed {seed}");
    assert!(
        runs >= MIN_INPUTS,
        "fuzz {name}: only {runs} inputs ran in ONBOARD_FUZZ_SECONDS={seconds}; at least \
         {MIN_INPUTS} are needed for the run to say anything"
    );
    runs
}

fn key_file() -> KeyFile {
    let fingerprint = Fingerprint::of_der(b"fuzz");
    KeyFile::new(
        vec![
            Server::new("ums.example.com", 8443).unwrap(),
            Server::new("192.0.2.10", 9443).unwrap(),
        ],
        fingerprint,
        vec![
            KeyEntry::one_time(FirstAuthKey::new("40512337860129621").unwrap()),
            KeyEntry::device_bound(
                FirstAuthKey::new("77120954388310452").unwrap(),
                "00E0C5540B8B".parse().unwrap(),
            ),
            KeyEntry::mass(FirstAuthKey::new("Rollout & <Spring> \"2026\"").unwrap()),
        ],
        None,
    )
}

#[test]
fn key_file_readers_never_panic_and_what_they_accept_round_trips() {
    let file = key_file();
    let seeds: Vec<Vec<u8>> = Format::ALL
        .iter()
        .map(|format| file.write(*format).into_bytes())
        .collect();
    let limits = Limits::default();
    fuzz("key files", seeds, |input| {
        let Ok(parsed) = KeyFile::parse(input, &limits) else {
            return Ok(());
        };
        for format in Format::ALL {
            let again = KeyFile::parse(parsed.write(format).as_bytes(), &limits)
                .map_err(|error| format!("its own {format} export does not parse: {error}"))?;
            if again != parsed {
                return Err(format!("its {format} export reads back differently"));
            }
        }
        Ok(())
    });
}

#[test]
fn certificate_requests_never_panic_and_accepted_ones_name_a_key() {
    let seeds: Vec<Vec<u8>> = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ]
    .into_iter()
    .map(|algorithm| {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        rcgen::CertificateParams::new(vec!["device".to_owned()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec()
    })
    .collect();
    fuzz("certificate requests", seeds, |input| {
        if let Ok(request) = ums_stub::ca::CertificateRequest::from_der(input)
            && request.public_key.is_empty()
        {
            return Err("accepted a request with no public key".to_owned());
        }
        Ok(())
    });
}

/// Every refusal of malformed Basic credentials, word for word.
const REFUSALS: [&str; 5] = [
    "HTTP Basic authorization with the unit ID as user and the key as password is required",
    "the Authorization header is not HTTP Basic",
    "the Basic credentials are not base64 of UTF-8 text",
    "the Basic credentials lack the ':' between unit ID and key",
    "the Basic user must be the unit ID: 12 hex digits (a MAC) or an 18-character UD Pocket serial",
];

#[test]
fn basic_credentials_never_panic_and_never_quote_the_header() {
    use base64::Engine;
    let encode = |text: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
        .into_bytes()
    };
    let seeds = vec![
        encode("00E0C5540B8B:40512337860129621"),
        encode("00:E0:C5:54:0B:8B:Rollout & <Spring>"),
        encode("ABCDEFGHJKLMNPQRST:x"),
        b"Basic".to_vec(),
    ];
    fuzz("basic credentials", seeds, |input| {
        let Ok(value) = HeaderValue::from_bytes(input) else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        match ums_stub::http::est::basic_credentials(&headers) {
            // The refusals are fixed texts: whatever the header held, none of it comes back.
            Err(ums_stub::http::ApiError::Problem { problem, .. }) => {
                let detail = problem.detail.unwrap_or_default();
                if !REFUSALS.contains(&detail.as_str()) {
                    return Err(format!("a refusal that is not a fixed text: {detail}"));
                }
            }
            Err(ums_stub::http::ApiError::Internal(error)) => {
                return Err(format!("an internal error: {error}"));
            }
            Ok(_) => {}
        }
        Ok(())
    });
}

#[test]
fn inventory_bodies_never_panic_and_accepted_ones_are_bounded() {
    let report = Inventory {
        host_name: "tc-0042".to_owned(),
        os_name: Some("IGEL OS".to_owned()),
        os_version: Some("12.4.2".to_owned()),
        kernel: Some("6.8.0-48-generic".to_owned()),
        cpu_model: Some("Intel(R) Celeron(R) J4125".to_owned()),
        memory_bytes: 8 << 30,
        nics: vec![Nic {
            name: "eth0".to_owned(),
            mac: "00:e0:c5:54:0b:8b".to_owned(),
        }],
    };
    let seeds = vec![serde_json::to_vec(&report).unwrap(), b"{}".to_vec()];
    fuzz("inventory", seeds, |input| {
        if input.len() > MAX_INVENTORY_BYTES {
            return Ok(());
        }
        let Ok(report) = serde_json::from_slice::<Inventory>(input) else {
            return Ok(());
        };
        if report.validate().is_ok() {
            let stored = serde_json::to_string(&report).unwrap();
            if stored.len() > MAX_INVENTORY_BYTES * 2 {
                return Err(format!("an accepted report stores {} bytes", stored.len()));
            }
        }
        Ok(())
    });
}

#[test]
fn alternate_keys_headers_never_panic_and_accepted_ones_round_trip() {
    use onboard_protocol::alternates::{
        MAX_KEYS_PER_REQUEST, decode_alternates, encode_alternates,
    };
    let keys: Vec<FirstAuthKey> = [
        "40512337860129621",
        "77120954388310452",
        "Rollout & <Spring>",
    ]
    .into_iter()
    .map(|key| FirstAuthKey::new(key).unwrap())
    .collect();
    let seeds = vec![
        encode_alternates(&keys).into_bytes(),
        encode_alternates(&keys[..1]).into_bytes(),
        b"c2VjcmV0,,".to_vec(),
    ];
    fuzz("alternate keys", seeds, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return Ok(());
        };
        match decode_alternates(text) {
            Ok(decoded) => {
                if decoded.len() >= MAX_KEYS_PER_REQUEST {
                    return Err(format!("accepted {} alternates", decoded.len()));
                }
                let again = decode_alternates(&encode_alternates(&decoded))
                    .map_err(|error| format!("its own encoding is refused: {error}"))?;
                if again
                    .iter()
                    .map(FirstAuthKey::expose_secret)
                    .ne(decoded.iter().map(FirstAuthKey::expose_secret))
                {
                    return Err("its own encoding reads back differently".to_owned());
                }
            }
            // The refusal is a fixed text with a number: nothing of the header comes back.
            Err(error) => {
                let said = error.to_string();
                if said
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || " -".contains(c)))
                {
                    return Err(format!("a refusal that quotes something: {said}"));
                }
            }
        }
        Ok(())
    });
}

/// Fuzzes the JSON body of one admin request type: it never panics, and what it accepts writes
/// back to JSON that reads as the same request.
fn admin_body<T>(name: &str, seeds: &[serde_json::Value])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq,
{
    let seeds = seeds
        .iter()
        .map(|seed| serde_json::to_vec(seed).unwrap())
        .collect();
    fuzz(name, seeds, |input| {
        let Ok(body) = serde_json::from_slice::<T>(input) else {
            return Ok(());
        };
        let written = serde_json::to_vec(&body).map_err(|error| error.to_string())?;
        match serde_json::from_slice::<T>(&written) {
            Ok(again) if again == body => Ok(()),
            Ok(_) => Err("its JSON reads back as another request".to_owned()),
            Err(error) => Err(format!("its own JSON is refused: {error}")),
        }
    });
}

#[test]
fn admin_bodies_never_panic_and_accepted_ones_round_trip() {
    use onboard_protocol::admin::{
        CreateKeys, EditAccount, EditKey, ExportKeys, KeyIds, Login, NewAccount, NewToken,
        SendCommand,
    };
    use serde_json::json;
    admin_body::<CreateKeys>(
        "admin body: create keys",
        &[
            json!({"type": "one-time", "quantity": 50, "comment": "lab"}),
            json!({"type": "device-bound", "unit_ids": ["00E0C5540B8B"], "comment": ""}),
            json!({"type": "mass", "password": "Rollout & <Spring> 2026 long", "comment": "x"}),
        ],
    );
    admin_body::<EditKey>("admin body: edit key", &[json!({"comment": "spare"})]);
    admin_body::<KeyIds>(
        "admin body: key IDs",
        &[json!({"ids": [1, 2, 9_007_199_254_740_993u64]})],
    );
    admin_body::<ExportKeys>(
        "admin body: export",
        &[
            json!({"ids": [1], "servers": [{"host": "ums.example.com", "port": 8443}], "format": "xml"}),
        ],
    );
    admin_body::<NewAccount>(
        "admin body: new account",
        &[
            json!({"name": "alice", "password": "a long passphrase", "rights": ["keys:read", "server:admin"]}),
        ],
    );
    admin_body::<EditAccount>(
        "admin body: edit account",
        &[
            json!({"rights": ["audit:read"]}),
            json!({"password": "another long one"}),
        ],
    );
    admin_body::<NewToken>(
        "admin body: new token",
        &[json!({"account": "alice", "name": "rig", "rights": ["keys:read"], "expires_days": 30})],
    );
    admin_body::<Login>(
        "admin body: login",
        &[json!({"name": "alice", "password": "a long passphrase"})],
    );
    admin_body::<SendCommand>(
        "admin body: device command",
        &[json!({"command": "renew-now"})],
    );
}

#[test]
fn cookies_and_bearer_headers_never_panic_and_yield_only_what_they_hold() {
    use ums_stub::http::admin::{bearer, session_cookie};
    let cookie = ums_stub::accounts::SESSION_COOKIE;
    let seeds = vec![
        format!("{cookie}=dGhlIHNlc3Npb24gdmFsdWU").into_bytes(),
        format!("theme=dark; {cookie}=abc; other=1").into_bytes(),
        b"Bearer umst_17_c2VjcmV0LXRva2VuLXZhbHVl".to_vec(),
        b"bearer   spaced-token  ".to_vec(),
    ];
    fuzz("cookies and bearer headers", seeds, |input| {
        let Ok(value) = HeaderValue::from_bytes(input) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(input).into_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value.clone());
        headers.insert(header::AUTHORIZATION, value);
        if let Some(found) = session_cookie(&headers)
            && (!text.contains(found) || found.contains(';'))
        {
            return Err(format!(
                "a cookie value that the header does not hold: {found:?}"
            ));
        }
        if let Some(token) = bearer(&headers)
            && (!text.contains(token) || token.trim() != token)
        {
            return Err(format!("a token that the header does not hold: {token:?}"));
        }
        Ok(())
    });
}

#[test]
fn connector_frames_never_panic_and_accepted_ones_are_commands() {
    use onboard_protocol::connector::{Command, MAX_FRAME_BYTES, Push};
    let seeds = Command::ALL
        .iter()
        .map(|command| serde_json::to_vec(&Push { command: *command }).unwrap())
        .chain([br#"{"command":"reboot"}"#.to_vec()])
        .collect();
    fuzz("connector frames", seeds, |input| {
        if input.len() > MAX_FRAME_BYTES {
            return Ok(());
        }
        let Ok(push) = serde_json::from_slice::<Push>(input) else {
            return Ok(());
        };
        if !Command::ALL.contains(&push.command) {
            return Err(format!("an unknown command {:?}", push.command));
        }
        let frame = serde_json::to_string(&push).map_err(|error| error.to_string())?;
        if frame.len() > MAX_FRAME_BYTES {
            return Err("a frame longer than a device accepts".to_owned());
        }
        Ok(())
    });
}
