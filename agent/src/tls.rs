//! TLS to the server: a verifier that trusts exactly the pinned UMS ID, and the client
//! configurations built on it (ARCHITECTURE §3).
//!
//! [`PinnedVerifier`] accepts a chain iff a certificate in it has the pinned fingerprint and the
//! leaf chains to that certificate by signature. Host names and public roots play no part (a
//! server may move hosts; a device needs no CA bundle). Validity periods are checked only when the
//! device clock is plausible ([`crate::clock`]). The handshake signature is always verified, so
//! a server must hold the leaf's private key. The UMS ID certificate it matched is kept, so that a
//! device pinned by the communication token learns the whole fingerprint.

use std::sync::{Arc, Mutex};

use onboard_protocol::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::SharedClock;
use crate::pin::Pin;

/// The longest chain walked from the leaf to the pinned certificate.
const MAX_CHAIN: usize = 8;

/// The workspace's one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a server's chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainRefusal {
    /// No certificate in the chain has the pinned fingerprint: another UMS ID (or a machine in
    /// the middle) answered.
    #[error(
        "the server is not the pinned UMS ID {pinned}: its chain holds {presented} instead \
         (another server, or a machine in the middle)"
    )]
    NotPinned {
        /// The pin, short.
        pinned: String,
        /// The short fingerprints of what was presented.
        presented: String,
    },
    /// The pinned certificate is there but the leaf does not chain to it by signature.
    #[error("the server's certificate is not signed by the pinned UMS ID {pinned}")]
    NotSigned {
        /// The pin, short.
        pinned: String,
    },
    /// A certificate in the path is outside its validity period (judged on a plausible clock).
    #[error(
        "the server's certificate {subject} is {what}: valid {not_before} to {not_after}, device clock {now}"
    )]
    Validity {
        /// "expired" or "not yet valid".
        what: &'static str,
        /// Its subject.
        subject: String,
        /// Its validity period.
        not_before: String,
        /// Its validity period.
        not_after: String,
        /// The device's time.
        now: String,
    },
    /// A certificate that signs another on the path is not a CA allowed to sign certificates
    /// (a device certificate, which the UMS ID also signs, vouching for a server).
    #[error(
        "the server's chain has a certificate signed by {issuer}, which is not a certificate \
         authority (a device certificate posing as one?)"
    )]
    NotAuthority {
        /// The subject of the certificate that signed without being a CA.
        issuer: String,
    },
    /// The leaf is not for a server: its extended key usage does not allow serverAuth (a device
    /// certificate presented by a device posing as the server).
    #[error(
        "the server presented a certificate that is not for a server ({subject}, without \
         serverAuth): a device posing as the server?"
    )]
    NotAServer {
        /// The leaf's subject.
        subject: String,
    },
    /// A certificate in the chain cannot be parsed.
    #[error("the server sent a certificate that cannot be parsed")]
    Unparsable,
}

/// What the verifier saw during the last handshake.
#[derive(Debug, Default)]
struct Seen {
    ums_id: Option<Vec<u8>>,
    refusal: Option<ChainRefusal>,
}

/// Verifies server chains against a pin.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: Pin,
    clock: SharedClock,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Mutex<Seen>,
}

impl PinnedVerifier {
    /// A verifier for `pin`, judging validity with `clock` when it is plausible.
    pub fn new(pin: Pin, clock: SharedClock) -> Arc<PinnedVerifier> {
        Arc::new(PinnedVerifier {
            pin,
            clock,
            algorithms: provider().signature_verification_algorithms,
            seen: Mutex::new(Seen::default()),
        })
    }

    /// The pin.
    pub fn pin(&self) -> &Pin {
        &self.pin
    }

    /// The DER of the UMS ID certificate the last accepted chain held.
    pub fn ums_id_certificate(&self) -> Option<Vec<u8>> {
        self.lock().ums_id.clone()
    }

    /// Why the last chain was refused, taking it (so a later fault is not mistaken for it).
    pub fn take_refusal(&self) -> Option<ChainRefusal> {
        self.lock().refusal.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a chain (leaf first) against the pin; on success, the pinned certificate's DER.
    pub fn check_chain(&self, chain: &[&[u8]]) -> Result<Vec<u8>, ChainRefusal> {
        let parsed: Vec<X509Certificate<'_>> = chain
            .iter()
            .map(|der| {
                X509Certificate::from_der(der)
                    .map(|(_, certificate)| certificate)
                    .map_err(|_| ChainRefusal::Unparsable)
            })
            .collect::<Result<_, _>>()?;
        let fingerprints: Vec<Fingerprint> =
            chain.iter().map(|der| Fingerprint::of_der(der)).collect();
        let Some(anchor) = fingerprints.iter().position(|fp| self.pin.matches(fp)) else {
            return Err(ChainRefusal::NotPinned {
                pinned: self.pin.short(),
                presented: fingerprints
                    .iter()
                    .map(Fingerprint::short)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        // Walk from the leaf towards the anchor, each step verified by signature.
        let mut path = vec![0usize];
        let mut current = 0usize;
        while current != anchor {
            if path.len() > MAX_CHAIN {
                return Err(ChainRefusal::NotSigned {
                    pinned: self.pin.short(),
                });
            }
            let child = &parsed[current];
            let issuer = (0..parsed.len()).find(|&index| {
                index != current
                    && !path.contains(&index)
                    && parsed[index].subject() == child.issuer()
                    && child
                        .verify_signature(Some(parsed[index].public_key()))
                        .is_ok()
            });
            match issuer {
                Some(index) => {
                    path.push(index);
                    current = index;
                }
                None => {
                    return Err(ChainRefusal::NotSigned {
                        pinned: self.pin.short(),
                    });
                }
            }
        }
        // Whoever signs on the path must be a CA allowed to sign certificates: a device
        // certificate is signed by the UMS ID too, and must not vouch for a server.
        for &index in &path[1..] {
            let issuer = &parsed[index];
            let is_ca = issuer
                .basic_constraints()
                .map_err(|_| ChainRefusal::Unparsable)?
                .is_some_and(|constraints| constraints.value.ca);
            let may_sign = issuer
                .key_usage()
                .map_err(|_| ChainRefusal::Unparsable)?
                .is_none_or(|usage| usage.value.key_cert_sign());
            if !is_ca || !may_sign {
                return Err(ChainRefusal::NotAuthority {
                    issuer: issuer.subject().to_string(),
                });
            }
        }
        // The leaf must be for a server: an extended key usage, when it has one, allows
        // serverAuth. Device certificates carry clientAuth only.
        if let Some(usage) = parsed[0]
            .extended_key_usage()
            .map_err(|_| ChainRefusal::Unparsable)?
            && !(usage.value.server_auth || usage.value.any)
        {
            return Err(ChainRefusal::NotAServer {
                subject: parsed[0].subject().to_string(),
            });
        }
        if self.clock.is_plausible() {
            let now = self.clock.now();
            for &index in &path {
                let validity = parsed[index].validity();
                let not_before = validity.not_before.to_datetime();
                let not_after = validity.not_after.to_datetime();
                let what = if now < not_before {
                    Some("not yet valid")
                } else if now > not_after {
                    Some("expired")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(ChainRefusal::Validity {
                        what,
                        subject: parsed[index].subject().to_string(),
                        not_before: crate::lifecycle::rfc3339(not_before),
                        not_after: crate::lifecycle::rfc3339(not_after),
                        now: crate::lifecycle::rfc3339(now),
                    });
                }
            }
        }
        Ok(chain[anchor].to_vec())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
            .chain(intermediates.iter().map(AsRef::as_ref))
            .collect();
        match self.check_chain(&chain) {
            Ok(ums_id) => {
                let mut seen = self.lock();
                seen.ums_id = Some(ums_id);
                seen.refusal = None;
                Ok(ServerCertVerified::assertion())
            }
            Err(refusal) => {
                self.lock().refusal = Some(refusal.clone());
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(refusal))),
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A device's own certificate and private key, for mutual TLS.
pub struct ClientIdentity {
    /// The device certificate (DER).
    pub certificate: Vec<u8>,
    /// The device key (PKCS#8 DER). Never logged.
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field(
                "certificate",
                &format_args!("{} bytes", self.certificate.len()),
            )
            .field("private_key", &"<hidden>")
            .finish()
    }
}

/// A rustls configuration that trusts only what `verifier` accepts, presenting `identity` when
/// given.
pub fn client_config(
    verifier: Arc<PinnedVerifier>,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder.with_client_auth_cert(
            vec![CertificateDer::from(identity.certificate.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.private_key.clone())),
        )?,
        None => builder.with_no_client_auth(),
    };
    // Every connection makes a full handshake: the pin and the client certificate are checked
    // afresh each time, and no ticket is kept (the server issues none either).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// An HTTPS client that trusts only what `verifier` accepts, presenting `identity` when given.
pub fn client(
    verifier: Arc<PinnedVerifier>,
    identity: Option<&ClientIdentity>,
    timeouts: &Timeouts,
) -> Result<reqwest::Client, rustls::Error> {
    let config = client_config(verifier, identity)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        // EST answers are never redirects; a redirect is not followed anywhere, least of all
        // to plain HTTP.
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .user_agent(concat!("onboard-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))
}

/// How long to wait for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TCP connection and TLS handshake.
    pub connect: std::time::Duration,
    /// For a whole request.
    pub request: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The verifier's refusals, over chains the real `ums-stub` authority issues: each case is a
    //! chain a machine in the middle or an enrolled device could present.

    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer};
    use rcgen::{KeyPair, KeyUsagePurpose};
    use ums_stub::ca::{Authority, CertificateRequest};
    use ums_stub::ums_id::UmsId;

    use super::*;
    use crate::clock::SystemClock;

    /// A UMS ID with a server leaf it issued.
    struct Server {
        ums_id: UmsId,
        leaf: Vec<u8>,
    }

    fn server() -> Server {
        let ums_id = UmsId::generate().unwrap();
        let (leaf, _key, _expiry) = Authority::new(&ums_id)
            .unwrap()
            .server_leaf(&["ums.example.com".to_owned()], time::Duration::days(30))
            .unwrap();
        Server { ums_id, leaf }
    }

    /// A device certificate the UMS ID issued, and the device's key pair.
    fn device(ums_id: &UmsId) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        let request = CertificateRequest::from_der(csr.der()).unwrap();
        let issued = Authority::new(ums_id)
            .unwrap()
            .device_certificate(
                "00E0C5540B8B",
                &request,
                time::Duration::days(30),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        (issued.der, key)
    }

    fn verifier(ums_id: &UmsId) -> Arc<PinnedVerifier> {
        PinnedVerifier::new(
            Pin::Fingerprint(ums_id.fingerprint()),
            Arc::new(SystemClock),
        )
    }

    #[test]
    fn the_server_leaf_of_the_pinned_ums_id_is_accepted() {
        let server = server();
        let anchor = verifier(&server.ums_id)
            .check_chain(&[&server.leaf, server.ums_id.certificate_der()])
            .unwrap();
        assert_eq!(anchor, server.ums_id.certificate_der());
    }

    #[test]
    fn a_device_certificate_presented_as_the_server_leaf_is_refused() {
        let server = server();
        let (device_certificate, _) = device(&server.ums_id);
        let refused = verifier(&server.ums_id)
            .check_chain(&[&device_certificate, server.ums_id.certificate_der()])
            .unwrap_err();
        assert!(
            matches!(refused, ChainRefusal::NotAServer { .. }),
            "{refused:?}"
        );
    }

    #[test]
    fn a_leaf_signed_by_a_device_key_is_refused() {
        let server = server();
        let (device_certificate, device_key) = device(&server.ums_id);
        // An enrolled device makes itself a "server" leaf and signs it with its own key, chaining
        // up through its real device certificate to the real UMS ID.
        let issuer =
            Issuer::from_ca_cert_der(&device_certificate.clone().into(), &device_key).unwrap();
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["ums.example.com".to_owned()]).unwrap();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "ums.example.com");
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let refused = verifier(&server.ums_id)
            .check_chain(&[
                leaf.der(),
                &device_certificate,
                server.ums_id.certificate_der(),
            ])
            .unwrap_err();
        assert!(
            matches!(&refused, ChainRefusal::NotAuthority { issuer } if issuer.contains("00E0C5540B8B")),
            "{refused:?}"
        );
    }

    #[test]
    fn the_real_ums_id_appended_to_a_foreign_chain_is_refused() {
        let real = server();
        let foreign = server();
        let refused = verifier(&real.ums_id)
            .check_chain(&[
                &foreign.leaf,
                foreign.ums_id.certificate_der(),
                real.ums_id.certificate_der(),
            ])
            .unwrap_err();
        assert!(
            matches!(refused, ChainRefusal::NotSigned { .. }),
            "{refused:?}"
        );
        // Without its foreign CA, the same: the pinned certificate does not sign the leaf.
        let refused = verifier(&real.ums_id)
            .check_chain(&[&foreign.leaf, real.ums_id.certificate_der()])
            .unwrap_err();
        assert!(
            matches!(refused, ChainRefusal::NotSigned { .. }),
            "{refused:?}"
        );
    }
}
