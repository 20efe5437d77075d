//! The server's TLS: a leaf issued by the UMS ID for the configured names, served with the UMS ID
//! in the chain, and optional client certificates checked against the UMS ID (for renewal).
//!
//! The leaf lives in `<data-dir>/tls/` and is reissued when the names change, when the UMS ID
//! changes, or when it has less than 30 days left.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;

use crate::ca::Authority;
use crate::files;
use crate::ums_id::UmsId;

const LEAF_DAYS: i64 = 365;
const RENEW_DAYS: i64 = 30;

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

/// The leaf for `hosts`, from `<data-dir>/tls/` or newly issued.
fn leaf(data_dir: &Path, ums_id: &UmsId, hosts: &[String]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let folder = data_dir.join("tls");
    let (cert_path, key_path, meta_path) = (
        folder.join("server.crt.der"),
        folder.join("server.key.der"),
        folder.join("server.json"),
    );
    let wanted = |not_after| LeafMeta {
        hosts: hosts.to_vec(),
        ums_id: ums_id.fingerprint().to_string(),
        not_after,
    };
    if let (Ok(meta), Ok(cert), Ok(key)) = (
        std::fs::read(&meta_path),
        std::fs::read(&cert_path),
        std::fs::read(&key_path),
    ) && let Ok(meta) = serde_json::from_slice::<LeafMeta>(&meta)
        && meta == wanted(meta.not_after)
        && meta.not_after > OffsetDateTime::now_utc().unix_timestamp() + RENEW_DAYS * 86_400
    {
        return Ok((cert, key));
    }
    let authority = Authority::new(ums_id).context("cannot use the UMS ID to issue")?;
    let (cert, key) = authority
        .server_leaf(hosts, LEAF_DAYS)
        .context("cannot issue the TLS certificate")?;
    files::create_private_dir(&folder)?;
    let not_after = OffsetDateTime::now_utc().unix_timestamp() + LEAF_DAYS * 86_400;
    files::write_private(&key_path, &key, true)?;
    files::write_private(&cert_path, &cert, true)?;
    files::write_private(
        &meta_path,
        &serde_json::to_vec_pretty(&wanted(not_after))?,
        true,
    )?;
    tracing::info!(hosts = ?hosts, "issued a new TLS certificate");
    Ok((cert, key))
}

/// The rustls server configuration for `hosts`.
pub fn server_config(
    data_dir: &Path,
    ums_id: &UmsId,
    hosts: &[String],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    anyhow::ensure!(
        !hosts.is_empty(),
        "no host name to issue the TLS certificate for (--host or hosts in the config)"
    );
    let (cert, key) = leaf(data_dir, ums_id, hosts)?;
    let chain = vec![
        CertificateDer::from(cert),
        CertificateDer::from(ums_id.certificate_der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ums_id.certificate_der().to_vec()))?;
    let provider = provider();
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .context("cannot build the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
