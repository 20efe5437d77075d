//! An in-process `ums-stub` on port 0 (started through `ums_stub::testing`) and an EST client
//! for it.

use std::sync::Arc;

use onboard_protocol::admin::CreateKeys;
use onboard_protocol::{KeyKind, est};
use rcgen::{CertificateParams, KeyPair};
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use ums_stub::config::Settings;
use ums_stub::http::Shared;
use ums_stub::rate_limit::Limits;
use ums_stub::serve::Running;
use ums_stub::store::{Actor, AuditEntry, DeviceRecord, KeyFilter, PageRequest};

/// A running server over a temporary data directory, started through `ums_stub::testing`.
pub(crate) struct TestServer {
    pub(crate) port: u16,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ums_id_der: Vec<u8>,
    server: ums_stub::testing::TestServer,
}

/// Limits high enough that no test trips them by accident.
pub(crate) fn generous() -> Limits {
    Limits {
        per_source: 1_000_000,
        per_unit: 1_000_000,
        window: std::time::Duration::from_secs(60),
    }
}

impl TestServer {
    pub(crate) async fn start(limits: Limits) -> Self {
        Self::start_with(|settings| settings.rate_limits = limits).await
    }

    /// A plain server (no test-rig mode: the server users run) whose settings `adjust` changes
    /// from the defaults (names: localhost, 127.0.0.1). `settings.test_rig = true` in `adjust`
    /// turns test-rig mode on.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Settings) + Send) -> Self {
        Self::from_builder(
            ums_stub::testing::TestServer::builder()
                .without_rig()
                .settings(adjust),
        )
        .await
    }

    /// A server `builder` starts.
    pub(crate) async fn from_builder(builder: ums_stub::testing::Builder<'_>) -> Self {
        let server = builder.start().await.unwrap();
        Self {
            port: server.port(),
            shared: server.shared().clone(),
            ums_id_der: server.certificate_der().to_vec(),
            server,
        }
    }

    /// The running server.
    pub(crate) fn running(&self) -> &Running {
        self.server.running()
    }

    /// Every enrolled device, as the store holds it.
    pub(crate) async fn devices(&self) -> Vec<DeviceRecord> {
        self.server.devices().await.unwrap()
    }

    /// The whole audit log, oldest first.
    pub(crate) async fn audit(&self) -> Vec<AuditEntry> {
        self.server.audit().await.unwrap()
    }

    /// The data directory, for running the `ums-stub` binary on it.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        &self.shared.stub.settings.data_dir
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// A client that trusts the UMS ID, optionally presenting a client certificate.
    /// A client without a certificate whose connections come from `local` (127.0.0.2 and the
    /// like: other hosts on loopback), for [`TestServer::ip_url`].
    pub(crate) fn client_from(&self, local: std::net::IpAddr) -> reqwest::Client {
        pinned_client(&self.ums_id_der, Some(local))
    }

    /// The URL of `path` by the server's IPv4 loopback address (for clients bound to one).
    pub(crate) fn ip_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn client(&self, identity: Option<(&[u8], &KeyPair)>) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ums_id_der.clone()))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(cert.to_vec())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap()
    }

    pub(crate) async fn stop(self) {
        self.server.stop().await.unwrap();
    }
}

/// A device: a unit ID and a P-256 key pair with its CSR.
pub(crate) struct Device {
    pub(crate) unit_id: String,
    pub(crate) key: KeyPair,
    pub(crate) csr_base64: String,
}

impl Device {
    pub(crate) fn new(unit_id: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let csr = params.serialize_request(&key).unwrap();
        Self {
            unit_id: unit_id.to_owned(),
            csr_base64: est::encode_base64(csr.der()),
            key,
        }
    }

    /// A unit ID from a number.
    pub(crate) fn numbered(n: usize) -> Self {
        Self::new(&format!("00E0C5{n:06X}"))
    }
}

/// What an enrollment answered: status, the device certificate (on 200) or the problem body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) certificate: Option<Vec<u8>>,
    pub(crate) problem: Option<serde_json::Value>,
    pub(crate) retry_after: Option<String>,
    /// Every header by name and value, sorted; the date's and Retry-After's values left out (they
    /// tell the second of the answer, not what it says).
    pub(crate) headers: Vec<(String, String)>,
}

impl Answer {
    pub(crate) fn code(&self) -> &str {
        self.problem
            .as_ref()
            .and_then(|p| p["code"].as_str())
            .unwrap_or("")
    }
}

pub(crate) async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let shown = match name.as_str() {
                "date" | "retry-after" => String::new(),
                _ => value.to_str().unwrap_or_default().to_owned(),
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    headers.sort();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.unwrap();
    if status == StatusCode::OK {
        let der = est::decode_base64(&body).unwrap();
        let mut certs = est::parse_certs_only(&der).unwrap();
        assert_eq!(certs.len(), 1);
        return Answer {
            status,
            certificate: certs.pop(),
            problem: None,
            retry_after,
            headers,
        };
    }
    let problem = (content_type == "application/problem+json")
        .then(|| serde_json::from_slice(&body).unwrap());
    Answer {
        status,
        certificate: None,
        problem,
        retry_after,
        headers,
    }
}

/// POSTs a simpleenroll with `unit_id:key` and the device's CSR.
pub(crate) async fn enroll(
    client: &reqwest::Client,
    server: &TestServer,
    device: &Device,
    key: &str,
) -> Answer {
    let response = client
        .post(server.url(onboard_protocol::routes::EST_SIMPLEENROLL))
        .basic_auth(&device.unit_id, Some(key))
        .header("content-type", "application/pkcs10")
        .body(device.csr_base64.clone())
        .send()
        .await
        .unwrap();
    read_answer(response).await
}

/// A client without a certificate that trusts only the UMS ID `ums_id_der`, its connections coming
/// from `local` when given.
pub(crate) fn pinned_client(ums_id_der: &[u8], local: Option<std::net::IpAddr>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ums_id_der.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(ums_stub::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder().tls_backend_preconfigured(config);
    if let Some(local) = local {
        builder = builder.local_address(local);
    }
    builder.build().unwrap()
}

/// Creates keys of `kind` (bound to `unit` for device-bound); (id, value) each.
pub(crate) async fn keys(
    server: &TestServer,
    kind: KeyKind,
    count: usize,
    unit: Option<&str>,
) -> Vec<(i64, String)> {
    let admin = server.shared.stub.keys();
    let ids = match kind {
        KeyKind::OneTime => admin
            .create_one_time(count, "", Box::new(|_| {}), &Actor::cli())
            .await
            .unwrap(),
        KeyKind::DeviceBound => admin
            .create_device_bound(
                &vec![unit.unwrap().parse().unwrap(); count],
                "",
                Box::new(|_| {}),
                &Actor::cli(),
            )
            .await
            .unwrap(),
        KeyKind::MassDeployment => {
            let mut ids = Vec::new();
            for _ in 0..count {
                ids.push(admin.create_mass(None, "", &Actor::cli()).await.unwrap().0);
            }
            ids
        }
    };
    revealed(server, ids).await
}

/// Creates the keys `request` asks for and returns (id, value) of each.
pub(crate) async fn keys_as(server: &TestServer, request: CreateKeys) -> Vec<(i64, String)> {
    let admin = server.shared.stub.keys();
    let ids = admin
        .create(&request, Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    revealed(server, ids).await
}

/// The values of keys `ids`: (ID, value) of each.
pub(crate) async fn revealed(server: &TestServer, ids: Vec<i64>) -> Vec<(i64, String)> {
    let filter = KeyFilter {
        ids: Some(ids),
        ..KeyFilter::default()
    };
    server
        .shared
        .stub
        .keys()
        .list(&filter, &PageRequest::all(), true)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|view| (view.id, view.key))
        .collect()
}
