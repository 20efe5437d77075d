//! The command line against a running server over its admin API (`--server`, `--token-file`,
//! `--fingerprint`), for test rigs and administrators without the data directory.
//!
//! The server is trusted the way devices trust it: its TLS chain must hold the UMS ID certificate
//! with the fingerprint given, and its leaf must verify up to that certificate for the host name
//! in the URL. No system root is consulted.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use onboard_protocol::{Fingerprint, Problem};
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Verifies a server chain against a pinned UMS ID fingerprint.
#[derive(Debug)]
struct PinnedUmsId {
    fingerprint: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedUmsId {
    /// WebPKI verification with the pinned certificate, found in the presented chain, as the only
    /// root.
    fn anchored(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let anchor = intermediates
            .iter()
            .find(|der| Fingerprint::of_der(der) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's TLS chain does not hold the UMS ID {}: it is not the server \
                     whose fingerprint was given (or a machine in between answered)",
                    self.fingerprint.short()
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|error| rustls::Error::General(format!("the UMS ID certificate: {error}")))?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|error| rustls::Error::General(error.to_string()))
    }
}

impl ServerCertVerifier for PinnedUmsId {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.anchored(intermediates)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
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

/// A running server's admin API. Its `Debug` never shows the token.
pub(super) struct Remote {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// A client for `server` (`https://HOST:PORT`), with the token in `token_file`, trusting the
    /// UMS ID with `fingerprint`.
    pub(super) fn connect(
        server: &str,
        token_file: &Path,
        fingerprint: &str,
    ) -> anyhow::Result<Self> {
        let fingerprint: Fingerprint = fingerprint
            .parse()
            .context("--fingerprint: the UMS ID fingerprint (ums-stub ums-id show)")?;
        let base = server.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            bail!("--server {base}: expected https://HOST:PORT");
        }
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("--token-file {}: cannot read it", token_file.display()))?
            .trim()
            .to_owned();
        if !token.starts_with(crate::accounts::TOKEN_PREFIX) {
            bail!(
                "--token-file {}: does not hold an API token (umst_...; ums-stub tokens create)",
                token_file.display()
            );
        }
        let provider = crate::tls::provider();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedUmsId {
                fingerprint,
                provider,
            }))
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .context("HTTPS client")?;
        Ok(Self {
            client,
            base,
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&dyn erased::Body>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.json()?);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Problem>(&text) {
            Ok(problem) => bail!(
                "{method} {path}: the server refused ({status}, {}): {}",
                problem.code,
                problem.detail.unwrap_or(problem.title)
            ),
            Err(_) => bail!("{method} {path}: the server answered {status}"),
        }
    }

    /// GETs JSON.
    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(reqwest::Method::GET, path, None)
            .await?
            .json()
            .await
            .with_context(|| format!("GET {path}: an answer that cannot be read"))
    }

    /// Sends JSON with `method`, reading JSON back.
    pub(super) async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(method, path, Some(&erased::Json(body)))
            .await?
            .json()
            .await
            .with_context(|| format!("{path}: an answer that cannot be read"))
    }

    /// Sends JSON with `method`, expecting no body back.
    pub(super) async fn act<B: Serialize + Sync>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<()> {
        let body = body.map(erased::Json);
        self.send(method, path, body.as_ref().map(|b| b as &dyn erased::Body))
            .await?;
        Ok(())
    }

    /// Sends JSON, reading text back.
    pub(super) async fn text<B: Serialize + Sync>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<String> {
        self.send(reqwest::Method::POST, path, Some(&erased::Json(body)))
            .await?
            .text()
            .await
            .with_context(|| format!("POST {path}: an answer that cannot be read"))
    }
}

/// A JSON body behind a trait object, so [`Remote::send`] is not generic.
mod erased {
    pub(super) trait Body: Sync {
        fn json(&self) -> anyhow::Result<Vec<u8>>;
    }

    pub(super) struct Json<'a, T>(pub(super) &'a T);

    impl<T: serde::Serialize + Sync> Body for Json<'_, T> {
        fn json(&self) -> anyhow::Result<Vec<u8>> {
            Ok(serde_json::to_vec(self.0)?)
        }
    }
}

/// Percent-encodes a query value or path segment.
pub(super) fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
