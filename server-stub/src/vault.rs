//! Protection of key values at rest.
//!
//! Two keys are derived with HKDF-SHA256 from the UMS ID private key: one for HMAC-SHA256 look-up
//! digests (the database finds a key by its digest, never by its value) and one for AES-256-GCM
//! sealing (so `keys list --show` and exports can still recover values). A copy of the database
//! alone reveals no key; with the UMS ID, everything can be recovered, which is why the UMS ID
//! backup is secret.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use onboard_protocol::FirstAuthKey;

const SALT: &[u8] = b"ums-stub key vault v1";

/// The look-up digest of a key value.
pub type LookupDigest = [u8; 32];

/// A sealed key that does not open: wrong UMS ID, or a damaged row.
#[derive(Debug, thiserror::Error)]
#[error("a stored key does not decrypt under this UMS ID (was the UMS ID replaced?)")]
pub struct SealBroken;

/// Keys derived from the UMS ID for protecting key values.
pub struct KeyVault {
    lookup: hmac::Key,
    seal: LessSafeKey,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyVault(..)")
    }
}

impl KeyVault {
    /// Derives the vault keys from secret material (the UMS ID private key).
    pub fn derive(secret: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        // Expanding to 32 bytes cannot fail: HKDF-SHA256 allows up to 8160.
        let lookup_okm = prk
            .expand(&[b"key lookup"], hmac::HMAC_SHA256)
            .expect("HKDF length");
        let seal_okm = prk
            .expand(&[b"key seal"], &AES_256_GCM)
            .expect("HKDF length");
        Self {
            lookup: hmac::Key::from(lookup_okm),
            seal: LessSafeKey::new(UnboundKey::from(seal_okm)),
        }
    }

    /// The digest the store finds `key` by.
    pub fn lookup(&self, key: &FirstAuthKey) -> LookupDigest {
        let tag = hmac::sign(&self.lookup, key.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Seals `key`, bound to its digest: nonce, then ciphertext and tag.
    pub fn seal(&self, key: &FirstAuthKey, digest: &LookupDigest) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce);
        let mut in_out = key.expose_secret().as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(digest),
                &mut in_out,
            )
            .expect("AES-GCM sealing of a short value");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// Opens a sealed key.
    pub fn open(&self, sealed: &[u8], digest: &LookupDigest) -> Result<FirstAuthKey, SealBroken> {
        if sealed.len() < NONCE_LEN {
            return Err(SealBroken);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealBroken)?;
        let mut in_out = body.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(digest), &mut in_out)
            .map_err(|_| SealBroken)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealBroken)?;
        FirstAuthKey::new(text).map_err(|_| SealBroken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_digest() {
        let vault = KeyVault::derive(b"secret one");
        let key = FirstAuthKey::new("40512337860129621").unwrap();
        let digest = vault.lookup(&key);
        let sealed = vault.seal(&key, &digest);
        assert!(
            !sealed.windows(17).any(|w| w == b"40512337860129621"),
            "sealed value is not the clear text"
        );
        assert_eq!(vault.open(&sealed, &digest).unwrap(), key);
        let mut other_digest = digest;
        other_digest[0] ^= 1;
        assert!(
            vault.open(&sealed, &other_digest).is_err(),
            "a row's seal does not open under another digest"
        );
        let other = KeyVault::derive(b"secret two");
        assert!(
            other.open(&sealed, &digest).is_err(),
            "another UMS ID cannot open it"
        );
        assert_ne!(
            other.lookup(&key),
            digest,
            "look-up digests depend on the UMS ID"
        );
        assert_eq!(vault.lookup(&key), digest, "look-up is deterministic");
    }
}
