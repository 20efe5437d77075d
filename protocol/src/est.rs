//! EST (RFC 7030) message bodies: base64 transfer encoding and PKCS#7 certs-only.
//!
//! EST carries a PKCS#10 request and a "certs-only" PKCS#7 (a degenerate CMS SignedData with
//! certificates and no signers) as base64 text. Both sides need the encoding, so it lives here,
//! written over bytes with no I/O.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why an EST body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstError {
    /// Not base64 (after dropping line breaks and spaces).
    #[error("the body is not base64")]
    Base64,
    /// Not a PKCS#7 certs-only structure.
    #[error("not a PKCS#7 certs-only structure: {0}")]
    Pkcs7(&'static str),
}

/// Base64 with a line break every 64 characters, as EST servers send it (LF, which `base64 -d`
/// and every decoder take).
pub fn encode_base64(der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 2);
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Decodes base64, ignoring white space and line breaks.
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, EstError> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD.decode(compact).map_err(|_| EstError::Base64)
}

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A PKCS#7 certs-only structure (DER) holding `certificates` (each DER), in order.
pub fn certs_only(certificates: &[&[u8]]) -> Vec<u8> {
    let certs: Vec<u8> = certificates.concat();
    let signed_data = [
        tlv(0x02, &[1]),                 // version 1
        tlv(0x31, &[]),                  // digestAlgorithms: none
        tlv(0x30, &tlv(0x06, OID_DATA)), // encapContentInfo: data, no content
        tlv(0xa0, &certs),               // certificates [0] IMPLICIT
        tlv(0x31, &[]),                  // signerInfos: none
    ]
    .concat();
    tlv(
        0x30,
        &[
            tlv(0x06, OID_SIGNED_DATA),
            tlv(0xa0, &tlv(0x30, &signed_data)),
        ]
        .concat(),
    )
}

/// Reads one DER element: its tag, its content and what follows it.
fn read(der: &[u8]) -> Result<(u8, &[u8], &[u8]), EstError> {
    let short = EstError::Pkcs7("truncated");
    let (&tag, rest) = der.split_first().ok_or(short.clone())?;
    let (&first, rest) = rest.split_first().ok_or(short.clone())?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(EstError::Pkcs7("bad length"));
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(short);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The certificates (each DER) in a PKCS#7 certs-only structure.
pub fn parse_certs_only(der: &[u8]) -> Result<Vec<Vec<u8>>, EstError> {
    let (tag, content_info, _) = read(der)?;
    if tag != 0x30 {
        return Err(EstError::Pkcs7("not a ContentInfo sequence"));
    }
    let (tag, oid, rest) = read(content_info)?;
    if tag != 0x06 || oid != OID_SIGNED_DATA {
        return Err(EstError::Pkcs7("not SignedData"));
    }
    let (tag, explicit, _) = read(rest)?;
    if tag != 0xa0 {
        return Err(EstError::Pkcs7("no content"));
    }
    let (tag, mut signed_data, _) = read(explicit)?;
    if tag != 0x30 {
        return Err(EstError::Pkcs7("SignedData is not a sequence"));
    }
    // version, digestAlgorithms, encapContentInfo, then optional [0] certificates.
    for _ in 0..3 {
        signed_data = read(signed_data)?.2;
    }
    let (tag, mut certs, _) = read(signed_data)?;
    if tag != 0xa0 {
        return Err(EstError::Pkcs7("no certificates"));
    }
    let mut out = Vec::new();
    while !certs.is_empty() {
        let (tag, _, rest) = read(certs)?;
        if tag != 0x30 {
            return Err(EstError::Pkcs7("a certificate is not a sequence"));
        }
        out.push(certs[..certs.len() - rest.len()].to_vec());
        certs = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_only_round_trips_short_and_long_elements() {
        let small = tlv(0x30, &[1, 2, 3]);
        let large = tlv(0x30, &vec![7u8; 70_000]);
        let der = certs_only(&[&small, &large]);
        assert_eq!(parse_certs_only(&der).unwrap(), vec![small, large]);
        let text = encode_base64(&der);
        assert!(text.lines().all(|line| line.len() <= 64));
        assert_eq!(decode_base64(text.as_bytes()).unwrap(), der);
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert_eq!(decode_base64(b"not base64!"), Err(EstError::Base64));
        for bad in [
            &b""[..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x03, 0x06, 0x01, 0x00],
            &[0x02, 0x01, 0x00],
        ] {
            assert!(parse_certs_only(bad).is_err(), "{bad:?}");
        }
        let der = certs_only(&[&tlv(0x30, &[1])]);
        for cut in 0..der.len() {
            let _ = parse_certs_only(&der[..cut]);
        }
    }
}
