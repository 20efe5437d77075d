//! The server's TLS: a leaf issued by the UMS ID for the configured names, served with the UMS ID
//! in the chain, and optional client certificates checked against the UMS ID (for renewal).
//!
//! The leaf lives in `<data-dir>/tls/` and is reissued at start when the names change, when the UMS
//! ID changes, or when it is within its renewal window (30 days before expiry by default). While
//! the server runs, [`ServerLeaf::renew_if_due`] (called by `serve` every hour) issues a new one
//! in the window and swaps it in: new handshakes get it, connections already open keep theirs. A
//! server up for longer than the leaf's lifetime never serves an expired one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use crate::ca::Authority;
use crate::files;
use crate::rig::clock::Clock;
use crate::ums_id::UmsId;

/// How long the server's leaf lasts, how early it is replaced, and how often that is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafPolicy {
    /// The lifetime of a new leaf.
    pub lifetime: Duration,
    /// A leaf with less than this left is replaced.
    pub renew_before: Duration,
    /// How often a running server checks.
    pub check_every: std::time::Duration,
}

impl Default for LeafPolicy {
    fn default() -> Self {
        Self {
            lifetime: Duration::days(365),
            renew_before: Duration::days(30),
            check_every: std::time::Duration::from_secs(3600),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct LeafMeta {
    hosts: Vec<String>,
    ums_id: String,
    not_after: i64,
}

/// The crypto provider of the whole workspace.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A leaf certificate and its key, DER, with its expiry.
struct Leaf {
    certificate: Vec<u8>,
    key: Vec<u8>,
    not_after: OffsetDateTime,
}

/// The files of the leaf in `folder`.
fn paths(folder: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        folder.join("server.crt.der"),
        folder.join("server.key.der"),
        folder.join("server.json"),
    )
}

/// The leaf in `<data-dir>/tls/` if it is for `hosts` and `ums_id` and outside its renewal
/// window at `now`.
fn stored_leaf(
    data_dir: &Path,
    ums_id: &UmsId,
    hosts: &[String],
    policy: &LeafPolicy,
    now: OffsetDateTime,
) -> Option<Leaf> {
    let (cert_path, key_path, meta_path) = paths(&data_dir.join("tls"));
    let meta: LeafMeta = serde_json::from_slice(&std::fs::read(meta_path).ok()?).ok()?;
    let wanted = LeafMeta {
        hosts: hosts.to_vec(),
        ums_id: ums_id.fingerprint().to_string(),
        not_after: meta.not_after,
    };
    let not_after = OffsetDateTime::from_unix_timestamp(meta.not_after).ok()?;
    if meta != wanted || not_after - policy.renew_before <= now {
        return None;
    }
    Some(Leaf {
        certificate: std::fs::read(cert_path).ok()?,
        key: std::fs::read(key_path).ok()?,
        not_after,
    })
}

/// Issues a new leaf for `hosts` and stores it in `<data-dir>/tls/` (key 0600).
fn issue_leaf(
    data_dir: &Path,
    ums_id: &UmsId,
    hosts: &[String],
    policy: &LeafPolicy,
) -> anyhow::Result<Leaf> {
    let folder = data_dir.join("tls");
    let (cert_path, key_path, meta_path) = paths(&folder);
    let authority = Authority::new(ums_id).context("cannot use the UMS ID to issue")?;
    let (certificate, key, not_after) = authority
        .server_leaf(hosts, policy.lifetime)
        .context("cannot issue the TLS certificate")?;
    files::create_private_dir(&folder)?;
    files::write_private(&key_path, &key, true)?;
    files::write_private(&cert_path, &certificate, true)?;
    let meta = LeafMeta {
        hosts: hosts.to_vec(),
        ums_id: ums_id.fingerprint().to_string(),
        not_after: not_after.unix_timestamp(),
    };
    files::write_private(&meta_path, &serde_json::to_vec_pretty(&meta)?, true)?;
    tracing::info!(hosts = ?hosts, %not_after, "issued a new TLS certificate");
    Ok(Leaf {
        certificate,
        key,
        not_after,
    })
}

/// The leaf `serve` presents, swapped for a new one before it expires.
pub struct ServerLeaf {
    data_dir: PathBuf,
    hosts: Vec<String>,
    policy: LeafPolicy,
    ums_id_der: Vec<u8>,
    current: RwLock<(Arc<CertifiedKey>, OffsetDateTime)>,
}

impl std::fmt::Debug for ServerLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLeaf")
            .field("hosts", &self.hosts)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

/// The chain (leaf, UMS ID) and signing key rustls serves.
fn certified(ums_id_der: &[u8], leaf: &Leaf) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = vec![
        CertificateDer::from(leaf.certificate.clone()),
        CertificateDer::from(ums_id_der.to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.clone()));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .context("the TLS key cannot be used")?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("the TLS certificate and key do not go together")?;
    Ok(Arc::new(certified))
}

impl ServerLeaf {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<CertifiedKey>, OffsetDateTime)> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the leaf served now expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.read().1
    }

    /// The leaf served now, DER.
    pub fn certificate_der(&self) -> Vec<u8> {
        self.read().0.cert[0].to_vec()
    }

    /// How often a running server should call [`ServerLeaf::renew_if_due`].
    pub fn check_every(&self) -> std::time::Duration {
        self.policy.check_every
    }

    /// Issues and swaps in a new leaf when the current one is within its renewal window at `now`;
    /// whether it did.
    pub fn renew_if_due(&self, ums_id: &UmsId, now: OffsetDateTime) -> anyhow::Result<bool> {
        if self.not_after() - self.policy.renew_before > now {
            return Ok(false);
        }
        let leaf = issue_leaf(&self.data_dir, ums_id, &self.hosts, &self.policy)?;
        let certified = certified(&self.ums_id_der, &leaf)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (certified, leaf.not_after);
        Ok(true)
    }
}

impl ServerLeaf {
    /// From now on presents a chain under `ums_id`: a new leaf it issues for the same names,
    /// kept in memory only (the data directory keeps the real one). New handshakes get it,
    /// connections already open keep theirs. The test rig's rotation drill: devices pinning the
    /// server's UMS ID must refuse it.
    pub fn present_under(&self, ums_id: &UmsId) -> anyhow::Result<()> {
        let authority = Authority::new(ums_id).context("cannot use the UMS ID to issue")?;
        let (certificate, key, not_after) = authority
            .server_leaf(&self.hosts, self.policy.lifetime)
            .context("cannot issue the TLS certificate")?;
        let leaf = Leaf {
            certificate,
            key,
            not_after,
        };
        let certified = certified(ums_id.certificate_der(), &leaf)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (certified, not_after);
        Ok(())
    }
}

impl ResolvesServerCert for ServerLeaf {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().0.clone())
    }
}

/// Checks device certificates against the UMS ID as webpki does, except that a certificate that
/// expired less than the renewal grace period ago is judged as of its last valid second: the chain
/// and every signature are checked all the same, and the routes let such a device only renew
/// (`http::device`, `renewal.rs`).
#[derive(Debug)]
struct GraceVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    grace: Duration,
    /// The server's clock: certificates are judged at its now (moved only in test-rig mode), the
    /// time they were issued by.
    clock: Clock,
}

impl rustls::server::danger::ClientCertVerifier for GraceVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let not_after = x509_parser::parse_x509_certificate(end_entity)
            .ok()
            .map(|(_, certificate)| certificate.validity().not_after.timestamp());
        let moved = u64::try_from(self.clock.offset().whole_seconds()).unwrap_or(0);
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.as_secs().saturating_add(moved),
        ));
        let now_seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let judged_at = match not_after {
            Some(not_after)
                if now_seconds > not_after
                    && now_seconds - not_after <= self.grace.whole_seconds() =>
            {
                rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    u64::try_from(not_after - 1).unwrap_or(0),
                ))
            }
            _ => now,
        };
        self.inner
            .verify_client_cert(end_entity, intermediates, judged_at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What `serve` needs for TLS: the rustls configuration and the leaf it resolves to.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The leaf, to renew while running.
    pub leaf: Arc<ServerLeaf>,
}

/// The rustls server configuration for `hosts`, with the leaf from `<data-dir>/tls/` or newly
/// issued under `policy`, taking device certificates expired less than `renewal_grace` ago by
/// `clock` (the server's, which a rig may move; the leaf itself keeps to the machine's clock, which
/// clients judge it by).
pub fn server_config(
    data_dir: &Path,
    ums_id: &UmsId,
    hosts: &[String],
    policy: LeafPolicy,
    renewal_grace: Duration,
    clock: Clock,
) -> anyhow::Result<ServerTls> {
    anyhow::ensure!(
        !hosts.is_empty(),
        "no host name to issue the TLS certificate for (--host or hosts in the config)"
    );
    let leaf = match stored_leaf(data_dir, ums_id, hosts, &policy, OffsetDateTime::now_utc()) {
        Some(leaf) => leaf,
        None => issue_leaf(data_dir, ums_id, hosts, &policy)?,
    };
    let server_leaf = Arc::new(ServerLeaf {
        data_dir: data_dir.to_owned(),
        hosts: hosts.to_vec(),
        policy,
        ums_id_der: ums_id.certificate_der().to_vec(),
        current: RwLock::new((certified(ums_id.certificate_der(), &leaf)?, leaf.not_after)),
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ums_id.certificate_der().to_vec()))?;
    let provider = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("cannot build the client certificate verifier")?;
    let client_verifier = Arc::new(GraceVerifier {
        inner: webpki,
        grace: renewal_grace,
        clock,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(server_leaf.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: devices make a handful of connections each and never resume (the
    // agent turns it off), so tickets would be work and a cache memory for nothing; and every
    // connection then shows its client certificate afresh to the verifier.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(ServerTls {
        config: Arc::new(config),
        leaf: server_leaf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> LeafPolicy {
        LeafPolicy {
            lifetime: Duration::hours(10),
            renew_before: Duration::hours(2),
            check_every: std::time::Duration::from_millis(10),
        }
    }

    /// A device certificate issued by `ums_id` that expired `ago`.
    fn expired_device_certificate(ums_id: &UmsId, ago: Duration) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        let request = crate::ca::CertificateRequest::from_der(csr.der()).unwrap();
        // Issued valid from an hour ago, so a negative lifetime makes one already expired.
        Authority::new(ums_id)
            .unwrap()
            .device_certificate("00E0C5540B8B", &request, -ago, OffsetDateTime::now_utc())
            .unwrap()
            .der
    }

    fn grace_verifier(ums_id: &UmsId, grace: Duration) -> GraceVerifier {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ums_id.certificate_der().to_vec()))
            .unwrap();
        GraceVerifier {
            inner: WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .unwrap(),
            grace,
            clock: Clock::system(),
        }
    }

    #[test]
    fn expired_device_certificates_pass_within_the_grace_period_only_and_still_must_verify() {
        use rustls::server::danger::ClientCertVerifier;
        let ums_id = UmsId::generate().unwrap();
        let other = UmsId::generate().unwrap();
        let now = rustls::pki_types::UnixTime::now();
        let verify = |verifier: &GraceVerifier, der: &[u8]| {
            verifier
                .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], now)
                .is_ok()
        };
        let expired = expired_device_certificate(&ums_id, Duration::minutes(30));
        assert!(verify(
            &grace_verifier(&ums_id, Duration::hours(1)),
            &expired
        ));
        assert!(
            !verify(&grace_verifier(&ums_id, Duration::minutes(10)), &expired),
            "past the grace period"
        );
        assert!(
            !verify(&grace_verifier(&ums_id, Duration::ZERO), &expired),
            "no grace at all"
        );
        // Within the grace period, another UMS ID's certificate or a tampered one is refused.
        let foreign = expired_device_certificate(&other, Duration::minutes(30));
        assert!(!verify(
            &grace_verifier(&ums_id, Duration::hours(1)),
            &foreign
        ));
        let mut tampered = expired.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        assert!(!verify(
            &grace_verifier(&ums_id, Duration::hours(1)),
            &tampered
        ));
        // An unexpired one passes as always.
        let fresh = expired_device_certificate(&ums_id, Duration::minutes(-30));
        assert!(verify(&grace_verifier(&ums_id, Duration::ZERO), &fresh));
    }

    #[test]
    fn the_leaf_is_kept_outside_its_window_and_replaced_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let ums_id = UmsId::generate().unwrap();
        let hosts = vec!["localhost".to_owned()];
        let tls = server_config(
            dir.path(),
            &ums_id,
            &hosts,
            short(),
            Duration::days(365),
            Clock::system(),
        )
        .unwrap();
        let first = tls.leaf.certificate_der();
        let expires = tls.leaf.not_after();
        let now = OffsetDateTime::now_utc();
        assert!(!tls.leaf.renew_if_due(&ums_id, now).unwrap());
        assert!(
            !tls.leaf
                .renew_if_due(&ums_id, expires - Duration::hours(3))
                .unwrap()
        );
        assert_eq!(tls.leaf.certificate_der(), first);
        // Inside the window: a new leaf, served from now on and kept for the next start.
        assert!(
            tls.leaf
                .renew_if_due(&ums_id, expires - Duration::hours(1))
                .unwrap()
        );
        let second = tls.leaf.certificate_der();
        assert_ne!(second, first);
        let again = server_config(
            dir.path(),
            &ums_id,
            &hosts,
            short(),
            Duration::days(365),
            Clock::system(),
        )
        .unwrap();
        assert_eq!(again.leaf.certificate_der(), second);
        // Other names at start: a new leaf.
        let renamed = server_config(
            dir.path(),
            &ums_id,
            &["ums.example.com".to_owned()],
            short(),
            Duration::days(365),
            Clock::system(),
        )
        .unwrap();
        assert_ne!(renamed.leaf.certificate_der(), second);
    }
}
