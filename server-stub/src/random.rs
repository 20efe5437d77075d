//! Randomness from the operating system's CSPRNG.

/// 17 decimal digits, as the UMS generates first-authentication keys, uniformly from
/// 00000000000000000 to 99999999999999999.
pub fn key_digits() -> String {
    const RANGE: u64 = 100_000_000_000_000_000;
    // Rejection sampling keeps the distribution uniform.
    let limit = u64::MAX - (u64::MAX % RANGE);
    loop {
        let mut bytes = [0u8; 8];
        fill(&mut bytes);
        let value = u64::from_le_bytes(bytes);
        if value < limit {
            return format!("{:017}", value % RANGE);
        }
    }
}

/// A positive 16-byte certificate serial number.
pub fn serial() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    bytes[0] &= 0x7F;
    bytes[0] |= 0x01;
    bytes
}

/// `N` random bytes, for tokens, session cookies and salts.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill(&mut bytes);
    bytes
}

/// Fills `bytes` from the OS CSPRNG. Without it there is no safe way to go on.
pub fn fill(bytes: &mut [u8]) {
    if let Err(error) = getrandom::fill(bytes) {
        panic!("the operating system's random number generator failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_digits_are_17_decimal_digits_and_vary() {
        let keys: std::collections::HashSet<String> = (0..1000).map(|_| key_digits()).collect();
        assert_eq!(keys.len(), 1000);
        assert!(
            keys.iter()
                .all(|k| k.len() == 17 && k.bytes().all(|b| b.is_ascii_digit()))
        );
        // Each position takes many digits (a fixed digit would show a bug in the sampling).
        for position in 0..17 {
            let digits: std::collections::HashSet<u8> =
                keys.iter().map(|k| k.as_bytes()[position]).collect();
            assert!(digits.len() >= 8, "position {position}: {digits:?}");
        }
    }
}
