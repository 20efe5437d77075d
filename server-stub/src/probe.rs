//! Whether a server a key file is about to name can be reached from this server, and whether its
//! TLS chain holds the UMS ID the file will pin (for the export dialog's check, before a stick is
//! written). A short TCP connect and TLS handshake; nothing is sent after it.
//!
//! The chain is judged as devices judge it: a certificate in it has the pinned fingerprint and the
//! leaf's signature verifies under that certificate's key; host names and public CAs play no part.
//! The handshake signature is verified by the crypto provider as always.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use onboard_protocol::Fingerprint;
use onboard_protocol::admin::ServerReach;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long a probe of one server may take, connect and handshake together.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The verdict.
    pub reach: ServerReach,
    /// What went wrong, or what the chain held, for people.
    pub detail: String,
}

/// Whether the chain `end_entity` + `intermediates` holds the UMS ID with fingerprint `pin` and
/// the leaf verifies under it (a leaf that is itself the UMS ID certificate holds it too).
pub fn chain_holds(pin: &Fingerprint, end_entity: &[u8], intermediates: &[&[u8]]) -> bool {
    let Some(anchor) = std::iter::once(end_entity)
        .chain(intermediates.iter().copied())
        .find(|der| Fingerprint::of_der(der) == *pin)
    else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, anchor))) = (
        X509Certificate::from_der(end_entity),
        X509Certificate::from_der(anchor),
    ) else {
        return false;
    };
    leaf.verify_signature(Some(anchor.public_key())).is_ok()
}

/// Records whether the presented chain holds the pin, and lets the handshake finish either way
/// (the probe reports; it sends nothing after the handshake).
#[derive(Debug)]
struct Judge {
    pin: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
    holds: Mutex<Option<bool>>,
}

impl ServerCertVerifier for Judge {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let intermediates: Vec<&[u8]> = intermediates.iter().map(AsRef::as_ref).collect();
        let holds = chain_holds(&self.pin, end_entity, &intermediates);
        *self
            .holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(holds);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Probes `host:port` from here within `timeout`: TCP, then TLS, judging the chain against
/// `pin`.
pub async fn probe(host: &str, port: u16, pin: &Fingerprint, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, handshake(host, port, pin)).await {
        Ok(probe) => probe,
        Err(_) => Probe {
            reach: ServerReach::Unreachable,
            detail: format!(
                "no TLS handshake within {} s (no answer, or a firewall)",
                timeout.as_secs()
            ),
        },
    }
}

async fn handshake(host: &str, port: u16, pin: &Fingerprint) -> Probe {
    let unreachable = |detail: String| Probe {
        reach: ServerReach::Unreachable,
        detail,
    };
    let stream = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(stream) => stream,
        Err(error) => {
            return unreachable(match error.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused: nothing listens on that port".to_owned()
                }
                _ if error.to_string().contains("lookup") => {
                    format!("the host name {host} does not resolve here")
                }
                _ => format!("cannot connect: {error}"),
            });
        }
    };
    let provider = crate::tls::provider();
    let judge = Arc::new(Judge {
        pin: *pin,
        provider: provider.clone(),
        holds: Mutex::new(None),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(judge.clone())
            .with_no_client_auth(),
        Err(error) => {
            return Probe {
                reach: ServerReach::TlsFailed,
                detail: format!("cannot set up TLS: {error}"),
            };
        }
    };
    // Devices ignore the name; a host that is no DNS name still gets a handshake.
    let name = ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("ums").expect("a DNS name"));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = connector.connect(name, stream).await;
    let holds = *judge
        .holds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (outcome, holds) {
        (Ok(_), Some(true)) => Probe {
            reach: ServerReach::Ok,
            detail: format!("its TLS chain holds the UMS ID {}", pin.short()),
        },
        (Ok(_), _) => Probe {
            reach: ServerReach::PinMismatch,
            detail: format!(
                "its TLS chain does not hold the UMS ID {} the key file pins: devices would \
                 refuse it (another server, or a proxy that ends TLS)",
                pin.short()
            ),
        },
        (Err(error), _) => Probe {
            reach: ServerReach::TlsFailed,
            detail: format!("the TLS handshake failed: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Authority;
    use crate::ums_id::UmsId;

    fn leaf(ums_id: &UmsId) -> Vec<u8> {
        Authority::new(ums_id)
            .unwrap()
            .server_leaf(&["ums.example".to_owned()], time::Duration::days(30))
            .unwrap()
            .0
    }

    #[test]
    fn a_chain_holds_the_pin_only_with_the_pinned_certificate_and_a_leaf_it_signed() {
        let ours = UmsId::generate().unwrap();
        let theirs = UmsId::generate().unwrap();
        let pin = ours.fingerprint();
        let (our_leaf, their_leaf) = (leaf(&ours), leaf(&theirs));
        let (our_ca, their_ca) = (ours.certificate_der(), theirs.certificate_der());
        /// The leaf, the certificates after it, whether the chain holds the pin.
        type Row<'a> = (&'a [u8], &'a [&'a [u8]], bool);
        let table: [Row<'_>; 6] = [
            (&our_leaf, &[our_ca], true),
            (our_ca, &[], true),
            (&our_leaf, &[], false),
            (&their_leaf, &[their_ca], false),
            // A machine in the middle sending the pinned certificate after its own leaf.
            (&their_leaf, &[our_ca], false),
            (&their_leaf, &[their_ca, our_ca], false),
        ];
        for (n, (leaf, intermediates, holds)) in table.into_iter().enumerate() {
            assert_eq!(chain_holds(&pin, leaf, intermediates), holds, "row {n}");
        }
    }
}
