//! Certificates the UMS ID issues: device certificates from PKCS#10 requests, and the TLS leaf
//! the server presents.
//!
//! A request is accepted when it parses, its signature verifies, and its key is P-256 or RSA of
//! 2048 to 4096 bits. Nothing else from the request is copied: the device certificate's subject is
//! the unit ID the device authenticated with, its usage is TLS client authentication, its serial is
//! random and it lasts the configured time.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;

use crate::ums_id::UmsId;

/// A device certificate just signed.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number, hex.
    pub serial: String,
    /// Its expiry.
    pub not_after: OffsetDateTime,
}

/// Signs the certificate for an enrollment or renewal; called inside the transaction, only when
/// the request is good, and may run on a backend's writer thread.
pub type IssueOnce = Box<dyn FnOnce() -> Result<IssuedCertificate, String> + Send>;

/// Why a certificate request was refused. Shown to the device as the problem detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not a PKCS#10 request.
    #[error("the body is not a PKCS#10 certificate request")]
    Malformed,
    /// The request's signature does not verify with its own key.
    #[error("the certificate request's signature does not verify")]
    BadSignature,
    /// A key type or size this server does not certify.
    #[error("the key must be ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits")]
    KeyType,
}

/// A verified certificate request: the public key to certify.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
}

impl CertificateRequest {
    /// Parses and verifies a DER PKCS#10 request.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let (rest, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der)
                .map_err(|_| CsrError::Malformed)?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed);
        }
        let spki = &csr.certification_request_info.subject_pki;
        let algorithm = &spki.algorithm;
        let key_ok = if algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .is_some_and(|curve| curve == OID_EC_P256 || curve == OID_NIST_EC_P384)
        } else if algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    (2048..=4096).contains(&rsa.key_size())
                }
                _ => false,
            }
        } else {
            false
        };
        if !key_ok {
            return Err(CsrError::KeyType);
        }
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        Ok(Self {
            public_key: spki.raw.to_vec(),
        })
    }
}

/// A certificate serial number as the store and the logs show it: lowercase hex of its bytes.
pub fn serial_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate authority over the UMS ID.
pub struct Authority<'a> {
    ums_id: &'a UmsId,
    issuer: Issuer<'a, &'a KeyPair>,
}

impl<'a> Authority<'a> {
    /// Issues with `ums_id`.
    pub fn new(ums_id: &'a UmsId) -> Result<Self, rcgen::Error> {
        let issuer =
            Issuer::from_ca_cert_der(&ums_id.certificate_der().to_vec().into(), ums_id.key_pair())?;
        Ok(Self { ums_id, issuer })
    }

    /// The UMS ID this authority issues with.
    pub fn ums_id(&self) -> &UmsId {
        self.ums_id
    }

    /// A device certificate for `unit_id` and the request's key, issued at `now` (the server's
    /// clock) and valid for `lifetime`.
    pub fn device_certificate(
        &self,
        unit_id: &str,
        request: &CertificateRequest,
        lifetime: time::Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, String> {
        let public_key =
            SubjectPublicKeyInfo::from_der(&request.public_key).map_err(|e| e.to_string())?;
        let now = now.replace_nanosecond(0).map_err(|e| e.to_string())?;
        let serial = crate::random::serial();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, unit_id);
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        // Backdated a little for devices whose clocks run behind.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + lifetime;
        params.use_authority_key_identifier_extension = true;
        let certificate = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok(IssuedCertificate {
            der: certificate.der().to_vec(),
            serial: serial_hex(&serial),
            not_after: params.not_after,
        })
    }

    /// A TLS server leaf for `hosts` (names or IP addresses) with a fresh key pair, valid for
    /// `lifetime`; returns the certificate DER, the key's PKCS#8 DER and the expiry.
    pub fn server_leaf(
        &self,
        hosts: &[String],
        lifetime: time::Duration,
    ) -> Result<(Vec<u8>, Vec<u8>, OffsetDateTime), rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            hosts.first().map_or("ums-stub", String::as_str),
        );
        params.distinguished_name = name;
        params.subject_alt_names = hosts
            .iter()
            .map(|host| match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => host.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(SerialNumber::from_slice(&crate::random::serial()));
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + lifetime;
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((
            certificate.der().to_vec(),
            key.serialize_der(),
            params.not_after,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(key: &KeyPair) -> Vec<u8> {
        let params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn certifies_a_p256_request_for_the_unit_id() {
        let ums_id = UmsId::generate().unwrap();
        let authority = Authority::new(&ums_id).unwrap();
        let device_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let request = CertificateRequest::from_der(&csr_for(&device_key)).unwrap();
        let issued = authority
            .device_certificate(
                "00E0C5540B8B",
                &request,
                time::Duration::days(365),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "00E0C5540B8B"
        );
        assert_eq!(cert.public_key().raw, request.public_key.as_slice());
        let (_, ca) = x509_parser::parse_x509_certificate(ums_id.certificate_der()).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        assert_eq!(serial_hex(cert.raw_serial()), issued.serial);
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 365);
    }

    #[test]
    fn refuses_bad_signatures_unsupported_keys_and_garbage_and_takes_p384() {
        let device_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut der = csr_for(&device_key);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(
            CertificateRequest::from_der(&der).unwrap_err(),
            CsrError::BadSignature
        );
        // P-384 is certified: the agent offers it (`device_key = "p384"`).
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(CertificateRequest::from_der(&csr_for(&p384)).is_ok());
        let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            CertificateRequest::from_der(&csr_for(&ed25519)).unwrap_err(),
            CsrError::KeyType
        );
        assert_eq!(
            CertificateRequest::from_der(b"junk").unwrap_err(),
            CsrError::Malformed
        );
    }
}
