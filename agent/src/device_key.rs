//! The device key pair, the certificate request made with it, and the checks of a certificate
//! issued for it. The agent generates the key pair on the device, persists it (0600) before the
//! first request, and never sends it anywhere: only its public half, in a CSR.

use std::path::{Path, PathBuf};

use onboard_protocol::{Fingerprint, UnitId, est};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pin::Pin;
use crate::state::{self, DEVICE_KEY_FILE, StateError};

/// The device key pair's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default, as the UMS ID itself).
    #[default]
    P256,
    /// ECDSA on P-384 with SHA-384.
    P384,
}

impl DeviceKeyAlgorithm {
    /// Every algorithm the agent offers: each one the server certifies (a test holds them to it).
    pub const ALL: [DeviceKeyAlgorithm; 2] = [DeviceKeyAlgorithm::P256, DeviceKeyAlgorithm::P384];

    /// The signature algorithm rcgen makes key pairs and requests with.
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            DeviceKeyAlgorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            DeviceKeyAlgorithm::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl std::str::FromStr for DeviceKeyAlgorithm {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "p256" | "p-256" => Ok(DeviceKeyAlgorithm::P256),
            "p384" | "p-384" => Ok(DeviceKeyAlgorithm::P384),
            _ => Err("expected p256 or p384".to_owned()),
        }
    }
}

/// The device key pair cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceKeyError {
    /// The state directory cannot be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The key file is unusable.
    #[error("the device key in {}: {reason}", path.display())]
    Unusable {
        /// The key file.
        path: PathBuf,
        /// What failed (never key material).
        reason: String,
    },
}

impl From<state::WriteError> for DeviceKeyError {
    fn from(error: state::WriteError) -> Self {
        DeviceKeyError::State(error.into())
    }
}

fn unusable(state_dir: &Path, reason: &str) -> DeviceKeyError {
    DeviceKeyError::Unusable {
        path: state_dir.join(DEVICE_KEY_FILE),
        reason: reason.to_owned(),
    }
}

/// The stored device key pair of `state_dir`, if there is one.
pub fn load(state_dir: &Path) -> Result<Option<KeyPair>, DeviceKeyError> {
    let Some(bytes) = state::read_optional(state_dir, DEVICE_KEY_FILE)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| unusable(state_dir, "not a PEM file"))?;
    KeyPair::from_pem(&text)
        .map(Some)
        .map_err(|_| unusable(state_dir, "not a PKCS#8 P-256 or P-384 private key in PEM"))
}

/// The stored device key pair, else a new one of `algorithm`, stored (0600) before it is used.
pub fn load_or_generate(
    state_dir: &Path,
    algorithm: DeviceKeyAlgorithm,
) -> Result<KeyPair, DeviceKeyError> {
    if let Some(key) = load(state_dir)? {
        return Ok(key);
    }
    let key = KeyPair::generate_for(algorithm.rcgen())
        .map_err(|_| unusable(state_dir, "cannot generate a key pair"))?;
    state::write_atomically(
        state_dir,
        DEVICE_KEY_FILE,
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    tracing::info!(?algorithm, "device key pair generated");
    Ok(key)
}

/// The stored device key pair of an enrolled device; missing is an error.
pub fn load_existing(state_dir: &Path) -> Result<KeyPair, DeviceKeyError> {
    load(state_dir)?.ok_or_else(|| unusable(state_dir, "missing"))
}

/// A CSR (base64 DER) for `key`, naming `unit_id`; `state_dir` names the key in an error.
pub fn csr(unit_id: &UnitId, key: &KeyPair, state_dir: &Path) -> Result<String, DeviceKeyError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, unit_id.as_str());
    params.distinguished_name = name;
    let request = params
        .serialize_request(key)
        .map_err(|_| unusable(state_dir, "cannot sign a certificate request with it"))?;
    Ok(est::encode_base64(request.der()))
}

/// What the checks of an issued certificate learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Its serial, hex.
    pub serial: String,
    /// Its expiry.
    pub not_after: OffsetDateTime,
}

/// Checks a certificate a server issued: it names `unit_id`, holds `key`'s public key and is
/// signed by the UMS ID certificate `ums_id`, which must be the pinned one. The refusal completes
/// "the server issued a certificate that …".
pub fn check_issued(
    der: &[u8],
    ums_id: &[u8],
    pin: &Pin,
    unit_id: &UnitId,
    key: &KeyPair,
) -> Result<Issued, &'static str> {
    if !pin.matches(&Fingerprint::of_der(ums_id)) {
        return Err("is not from the pinned UMS ID");
    }
    let (_, issuer) = X509Certificate::from_der(ums_id).map_err(|_| "cannot be checked")?;
    let (_, certificate) = X509Certificate::from_der(der).map_err(|_| "cannot be parsed")?;
    let names_unit = certificate
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| cn.eq_ignore_ascii_case(unit_id.as_str()));
    if !names_unit {
        return Err("names another unit ID");
    }
    if certificate.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err("holds another public key than this device's");
    }
    certificate
        .verify_signature(Some(issuer.public_key()))
        .map_err(|_| "is not signed by the pinned UMS ID")?;
    let not_after = certificate.validity().not_after.to_datetime();
    let serial = state::hex(certificate.raw_serial());
    Ok(Issued { serial, not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_key_the_agent_offers_is_one_the_server_certifies() {
        let unit: UnitId = "00E0C5540B8B".parse().unwrap();
        for algorithm in DeviceKeyAlgorithm::ALL {
            let key = KeyPair::generate_for(algorithm.rcgen()).unwrap();
            let csr = csr(&unit, &key, Path::new("/nonexistent")).unwrap();
            let der = est::decode_base64(csr.as_bytes()).unwrap();
            let request = ums_stub::ca::CertificateRequest::from_der(&der);
            assert!(request.is_ok(), "{algorithm:?}: {request:?}");
        }
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_refused_naming_the_file_not_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEVICE_KEY_FILE), "secret-looking junk").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains(DEVICE_KEY_FILE), "{error}");
        assert!(!error.contains("junk"), "{error}");
        assert!(load_existing(tempfile::tempdir().unwrap().path()).is_err());
    }
}
