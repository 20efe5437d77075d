//! What the server benchmarks share: one-time keys with their values, device requests, and a
//! client configuration that trusts the UMS ID with session resumption off.

use std::sync::Arc;

use onboard_protocol::est;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;
use ums_stub::keys::KeyAdmin;
use ums_stub::store::{Actor, PageRequest};

/// A device's enrollment request: its unit ID, the key it presents, its CSR (base64 DER).
pub(crate) type Request = (String, String, String);

/// Creates `count` one-time keys through `admin` and returns their values, in creation order.
pub(crate) async fn one_time_keys(admin: &KeyAdmin, count: usize) -> Vec<String> {
    let ids = admin
        .create_one_time(count, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let wanted: std::collections::HashSet<i64> = ids.iter().copied().collect();
    admin
        .list(&Default::default(), &PageRequest::all(), true)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|view| wanted.contains(&view.id))
        .map(|view| view.key)
        .collect()
}

/// One request per key, each with a P-256 key pair of its own and unit ID `0A` and its index; made
/// before anything is timed.
pub(crate) fn requests(keys: &[String]) -> Arc<Vec<Request>> {
    Arc::new(
        keys.iter()
            .enumerate()
            .map(|(n, key)| {
                let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let csr = CertificateParams::new(Vec::<String>::new())
                    .unwrap()
                    .serialize_request(&pair)
                    .unwrap();
                (
                    format!("0A{n:010X}"),
                    key.clone(),
                    est::encode_base64(csr.der()),
                )
            })
            .collect(),
    )
}

/// A client configuration trusting the UMS ID `ums_id` (DER), with session resumption off.
pub(crate) fn client_config(ums_id: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ums_id.to_vec())).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config
}
