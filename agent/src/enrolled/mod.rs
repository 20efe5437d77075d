//! The enrolled side: what a device holding a certificate does, always over mutual TLS with it
//! and pinned to its UMS ID, never with a key again. Renewal within [`RENEW_BEFORE`] of expiry,
//! the inventory report, and ([`connector`]) the WebSocket the device keeps to its server.
//!
//! A server that no longer honours the certificate (neither the current nor the previous one, or
//! expired past the renewal grace period) turns the device [`crate::lifecycle::Phase::Orphaned`]: it enrolls again
//! with a key from the next stick, keeping its key pair.

pub mod connector;

use std::sync::Arc;

use onboard_protocol::routes::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_PKCS10, DEVICE_INVENTORY, EST_SIMPLEREENROLL,
};
use onboard_protocol::{Inventory, ProblemCode};
use rcgen::KeyPair;
use reqwest::StatusCode;
use time::OffsetDateTime;

use crate::device_key;
use crate::enroll::{EnrollError, Enroller};
use crate::est_client::{
    self, Answer, certificate_from, certificate_refused_in_handshake, clean_detail, transport_fault,
};
use crate::lifecycle::{Event, rfc3339};
use crate::pin::Pin;
use crate::state::{self, AgentState, DEVICE_CERT_FILE, DEVICE_KEY_FILE};
use crate::tls::{self, ClientIdentity, PinnedVerifier};

/// A certificate this close to expiry is renewed.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// What an enrolled device speaks with.
pub(crate) struct Enrolled {
    pub(crate) pin: Pin,
    pub(crate) identity: ClientIdentity,
    pub(crate) key: KeyPair,
    pub(crate) servers: Vec<String>,
}

impl Enroller {
    /// The pin, identity and key pair of an enrolled device, and its servers (the one it
    /// enrolled with first).
    pub(crate) fn enrolled(&self, state: &AgentState) -> Result<Enrolled, EnrollError> {
        if !state.phase.is_enrolled() {
            return Err(EnrollError::NotEnrolled);
        }
        let pin = self
            .configured_pin
            .clone()
            .or_else(|| state.pin.clone())
            .ok_or(EnrollError::NotEnrolled)?;
        let key = device_key::load_existing(&self.state_dir)?;
        let certificate = state::read_optional(&self.state_dir, DEVICE_CERT_FILE)?
            .and_then(|pem| state::certificate_der(&pem))
            .ok_or_else(|| EnrollError::StateFile {
                path: self.state_dir.join(DEVICE_CERT_FILE),
                reason: "the device certificate is missing or not PEM".to_owned(),
            })?;
        let mut servers: Vec<String> = state.server.iter().cloned().collect();
        for server in &state.servers {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        Ok(Enrolled {
            pin,
            identity: ClientIdentity {
                certificate,
                private_key: key.serialize_der(),
            },
            key,
            servers,
        })
    }

    /// A client presenting the device certificate; a failure names both files.
    pub(crate) fn mutual_client(
        &self,
        verifier: Arc<PinnedVerifier>,
        enrolled: &Enrolled,
    ) -> Result<reqwest::Client, EnrollError> {
        tls::client(verifier, Some(&enrolled.identity), &self.timeouts).map_err(|error| {
            EnrollError::Tls(format!(
                "the device key {} and certificate {} cannot be used together: {error}",
                self.state_dir.join(DEVICE_KEY_FILE).display(),
                self.state_dir.join(DEVICE_CERT_FILE).display()
            ))
        })
    }

    /// Whether the certificate of an enrolled device is within [`RENEW_BEFORE`] of expiry. With
    /// an implausible clock nothing can be judged: `false`.
    pub fn renewal_due(&self, state: &AgentState) -> bool {
        if !self.clock.is_plausible() {
            return false;
        }
        state
            .certificate_not_after
            .as_deref()
            .and_then(|text| {
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_some_and(|not_after| not_after - self.clock.now() <= RENEW_BEFORE)
    }

    /// Renews the device certificate over mutual TLS with the current one (same key pair), on
    /// the servers in turn. `Ok(false)` when no server could do it now (logged; retried later).
    pub async fn renew(&self, state: &mut AgentState) -> Result<bool, EnrollError> {
        let enrolled = self.enrolled(state)?;
        let csr = device_key::csr(&self.unit_id, &enrolled.key, &self.state_dir)?;
        for server in &enrolled.servers {
            let verifier = PinnedVerifier::new(enrolled.pin.clone(), self.clock.clone());
            let client = self.mutual_client(verifier.clone(), &enrolled)?;
            let url = format!("https://{server}{EST_SIMPLEREENROLL}");
            let response = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_PKCS10)
                .body(csr.clone())
                .send()
                .await;
            let response = match response {
                Ok(response) if response.status() == StatusCode::OK => response,
                Ok(response) => {
                    let status = response.status();
                    let problem = est_client::problem_of(response).await;
                    let detail = problem
                        .as_ref()
                        .and_then(|problem| problem.detail.as_deref())
                        .map(clean_detail)
                        .unwrap_or_default();
                    if problem.is_some_and(|p| p.code == ProblemCode::CertificateNotCurrent)
                        && Self::speaks_for_the_device(state, server)
                    {
                        self.orphaned(state, server, &detail)?;
                        return Ok(false);
                    }
                    tracing::warn!(%server, status = status.as_u16(), %detail, "renewal refused");
                    state.last_error =
                        Some(format!("{server}: renewal refused: HTTP {status} {detail}"));
                    continue;
                }
                Err(error) => {
                    if certificate_refused_in_handshake(&error) && self.certificate_expired(state) {
                        self.orphaned(
                            state,
                            server,
                            "the server refused this device's certificate in the TLS handshake \
                             (expired past its renewal grace period)",
                        )?;
                        return Ok(false);
                    }
                    let Answer::Fault { detail, .. } = transport_fault(&verifier, &error) else {
                        continue;
                    };
                    tracing::warn!(%server, %detail, "renewal failed");
                    state.last_error = Some(format!("{server}: renewal failed: {detail}"));
                    continue;
                }
            };
            let der = match certificate_from(response).await {
                Ok(der) => der,
                Err(detail) => {
                    state.last_error = Some(format!("{server}: {detail}"));
                    continue;
                }
            };
            let Some(ums_id) = verifier.ums_id_certificate() else {
                continue;
            };
            let issued = match device_key::check_issued(
                &der,
                &ums_id,
                &enrolled.pin,
                &self.unit_id,
                &enrolled.key,
            ) {
                Ok(issued) => issued,
                Err(problem) => {
                    tracing::error!(%server, problem, "renewed certificate refused");
                    state.last_error =
                        Some(format!("{server} renewed a certificate that {problem}"));
                    continue;
                }
            };
            self.store_certificates(&der, None)?;
            state.certificate_serial = Some(issued.serial.clone());
            state.certificate_not_after = Some(rfc3339(issued.not_after));
            state.renewed_at = Some(rfc3339(self.clock.now()));
            state.server = Some(server.clone());
            state.last_error = None;
            tracing::info!(%server, serial = %issued.serial, not_after = %rfc3339(issued.not_after), "device certificate renewed");
            self.transition(state, Event::Renewed)?;
            return Ok(true);
        }
        self.save(state)?;
        Ok(false)
    }

    /// Whether `server`'s word on this device's certificate is final: the server that issued or
    /// last renewed it (another one may hold an older copy of the database).
    pub(crate) fn speaks_for_the_device(state: &AgentState, server: &str) -> bool {
        state
            .server
            .as_deref()
            .is_none_or(|issuer| issuer == server)
    }

    /// Whether this device's own certificate has expired, judged on a plausible clock only: a
    /// handshake refusal means the certificate lapsed only then.
    fn certificate_expired(&self, state: &AgentState) -> bool {
        self.clock.is_plausible()
            && state
                .certificate_not_after
                .as_deref()
                .and_then(|text| {
                    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_some_and(|not_after| not_after < self.clock.now())
    }

    /// The server no longer honours this device's certificate: the phase says so, with the fix,
    /// and the device enrolls again with a key from the next stick, keeping its key pair.
    pub(crate) fn orphaned(
        &self,
        state: &mut AgentState,
        server: &str,
        detail: &str,
    ) -> Result<(), EnrollError> {
        tracing::error!(
            %server,
            %detail,
            "the server no longer honours this device's certificate; plug in a stick with a fresh \
             key to enroll again"
        );
        state.last_error = Some(format!("{server}: {detail}"));
        self.transition(
            state,
            Event::Orphaned {
                detail: detail.to_owned(),
            },
        )
    }

    /// Sends `inventory` to the server over mutual TLS. `Ok(false)` when no server took it.
    pub async fn report_inventory(
        &self,
        state: &mut AgentState,
        inventory: &Inventory,
    ) -> Result<bool, EnrollError> {
        let enrolled = self.enrolled(state)?;
        let body = serde_json::to_vec(inventory).unwrap_or_default();
        for server in &enrolled.servers {
            let verifier = PinnedVerifier::new(enrolled.pin.clone(), self.clock.clone());
            let client = self.mutual_client(verifier.clone(), &enrolled)?;
            let response = client
                .put(format!("https://{server}{DEVICE_INVENTORY}"))
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_JSON)
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    state.inventory_reported_at = Some(rfc3339(self.clock.now()));
                    self.save(state)?;
                    tracing::info!(%server, host_name = %inventory.host_name, nics = inventory.nics.len(), "inventory reported");
                    return Ok(true);
                }
                Ok(response) => {
                    let status = response.status();
                    let problem = est_client::problem_of(response).await;
                    if let Some(problem) = problem.filter(|p| {
                        p.code == ProblemCode::CertificateNotCurrent
                            && Self::speaks_for_the_device(state, server)
                    }) {
                        let detail = problem.detail.as_deref().map(clean_detail);
                        self.orphaned(state, server, &detail.unwrap_or_default())?;
                        return Ok(false);
                    }
                    tracing::warn!(%server, status = status.as_u16(), "inventory refused");
                }
                Err(error) => {
                    if certificate_refused_in_handshake(&error) && self.certificate_expired(state) {
                        self.orphaned(
                            state,
                            server,
                            "the server refused this device's certificate in the TLS handshake",
                        )?;
                        return Ok(false);
                    }
                    let detail = match transport_fault(&verifier, &error) {
                        Answer::Fault { detail, .. } => detail,
                        _ => String::new(),
                    };
                    tracing::warn!(%server, %detail, "inventory not reported");
                }
            }
        }
        Ok(false)
    }
}
