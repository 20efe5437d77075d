//! The device key pair: which algorithm it uses. The agent generates it on the device, persists
//! it before the first request, and never sends it anywhere (only its public half, in a CSR).

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
