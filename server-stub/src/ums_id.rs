//! The UMS ID: the server's ECDSA P-256 key pair and self-signed CA certificate.
//!
//! It names no host, so it does not change when the host name, the address or the database does.
//! It lives in `<data-dir>/ums-id/`, apart from the database: `ums-id.key.pem` (the private key),
//! `ums-id.crt` (the certificate, PEM) and `ums-id.json` (its creation time). The folder is built
//! beside its final place and renamed into it, so a crash never leaves half an identity, and two
//! processes creating it at once end up sharing the one that won.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use onboard_protocol::Fingerprint;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::files::{self, WriteError};

const FOLDER: &str = "ums-id";
const KEY_FILE: &str = "ums-id.key.pem";
const CERT_FILE: &str = "ums-id.crt";
const META_FILE: &str = "ums-id.json";
/// Where `restore --force` moves the identity it replaces until the new one is in place.
const REPLACED: &str = ".ums-id-replaced";
const BACKUP_HEADER: &str =
    "# ums-stub UMS ID backup. It holds the UMS ID private key: keep it secret.";

/// How long the UMS ID certificate is valid. Devices pin it for their lifetime.
const VALIDITY_YEARS: i64 = 30;

/// Why the UMS ID could not be created, loaded, backed up or restored.
#[derive(Debug, thiserror::Error)]
pub enum UmsIdError {
    /// Reading a file of the identity failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A file of the identity (or a backup) is damaged.
    #[error("{}: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate the UMS ID")]
    Generate(#[source] rcgen::Error),
    /// A restore would replace a different identity.
    #[error(
        "this server already has another UMS ID ({existing}); restoring {restored} would strand every \
         device that pins the current one and make the stored keys unreadable (use --force to replace it)"
    )]
    Different {
        /// Short fingerprint of the identity in place.
        existing: String,
        /// Short fingerprint of the backup.
        restored: String,
    },
}

/// The server's identity.
pub struct UmsId {
    key_pair: KeyPair,
    certificate_pem: String,
    certificate_der: Vec<u8>,
    fingerprint: Fingerprint,
    created_at: OffsetDateTime,
}

impl std::fmt::Debug for UmsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UmsId")
            .field("fingerprint", &self.fingerprint)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    created_at: String,
}

impl UmsId {
    /// A new identity: a P-256 key pair and a self-signed CA certificate naming no host.
    pub fn generate() -> Result<Self, UmsIdError> {
        let key_pair =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(UmsIdError::Generate)?;
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "UMS ID");
        name.push(DnType::OrganizationName, "ums-stub");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365 * VALIDITY_YEARS);
        params.serial_number = Some(SerialNumber::from_slice(&crate::random::serial()));
        let certificate = params
            .self_signed(&key_pair)
            .map_err(UmsIdError::Generate)?;
        let certificate_der = certificate.der().to_vec();
        Ok(Self {
            fingerprint: Fingerprint::of_der(&certificate_der),
            certificate_pem: certificate.pem(),
            certificate_der,
            key_pair,
            created_at: now,
        })
    }

    /// The identity in `data_dir`, if there is one.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, UmsIdError> {
        let folder = data_dir.join(FOLDER);
        let aside = data_dir.join(REPLACED);
        if aside.exists() {
            if folder.exists() {
                // A replacement finished but its clean-up did not.
                let _ = fs::remove_dir_all(&aside);
            } else {
                // A replacement stopped between its two renames: put the old identity back rather
                // than let first use create a new one.
                fs::rename(&aside, &folder).map_err(|source| UmsIdError::Read {
                    path: aside.clone(),
                    source,
                })?;
                let _ = files::sync_folder(data_dir);
            }
        }
        if !folder.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = folder.join(name);
            fs::read_to_string(&path).map_err(|source| UmsIdError::Read { path, source })
        };
        let meta: Meta =
            serde_json::from_str(&read(META_FILE)?).map_err(|error| UmsIdError::Damaged {
                path: folder.join(META_FILE),
                reason: error.to_string(),
            })?;
        let created_at =
            OffsetDateTime::parse(&meta.created_at, &Rfc3339).map_err(|_| UmsIdError::Damaged {
                path: folder.join(META_FILE),
                reason: "created_at is not an RFC 3339 time".into(),
            })?;
        Self::from_pems(&read(KEY_FILE)?, &read(CERT_FILE)?, created_at, &folder).map(Some)
    }

    /// The identity in `data_dir`, created there first if there is none. The flag says whether it
    /// was created now.
    pub fn load_or_create(data_dir: &Path) -> Result<(Self, bool), UmsIdError> {
        if let Some(existing) = Self::load(data_dir)? {
            return Ok((existing, false));
        }
        let fresh = Self::generate()?;
        match fresh.install(data_dir, false) {
            Ok(()) => Ok((fresh, true)),
            // Another process created it first: use theirs.
            Err(UmsIdError::Different { .. }) => {
                let theirs = Self::load(data_dir)?.ok_or_else(|| UmsIdError::Damaged {
                    path: data_dir.join(FOLDER),
                    reason: "vanished while being created".into(),
                })?;
                Ok((theirs, false))
            }
            Err(other) => Err(other),
        }
    }

    fn from_pems(
        key_pem: &str,
        cert_pem: &str,
        created_at: OffsetDateTime,
        origin: &Path,
    ) -> Result<Self, UmsIdError> {
        let damaged = |reason: &str| UmsIdError::Damaged {
            path: origin.to_owned(),
            reason: reason.to_owned(),
        };
        let key_pair =
            KeyPair::from_pem(key_pem).map_err(|_| damaged("the private key does not parse"))?;
        if key_pair.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(damaged("the private key is not an ECDSA P-256 key"));
        }
        let block = pem::parse(cert_pem).map_err(|_| damaged("the certificate is not PEM"))?;
        if block.tag() != "CERTIFICATE" {
            return Err(damaged("the certificate PEM block is not a CERTIFICATE"));
        }
        let certificate_der = block.contents().to_vec();
        // The certificate embeds its subject public key info verbatim: the key pair must be the
        // one it was issued for.
        let public = key_pair.subject_public_key_info();
        if !certificate_der
            .windows(public.len())
            .any(|window| window == public.as_slice())
        {
            return Err(damaged(
                "the private key does not belong to the certificate",
            ));
        }
        Ok(Self {
            fingerprint: Fingerprint::of_der(&certificate_der),
            certificate_pem: pem::encode(&block),
            certificate_der,
            key_pair,
            created_at,
        })
    }

    /// Puts this identity into `data_dir`. With `replace` false, an existing different identity
    /// is refused; the same one is left as it is.
    pub fn install(&self, data_dir: &Path, replace: bool) -> Result<(), UmsIdError> {
        files::create_private_dir(data_dir)?;
        let folder = data_dir.join(FOLDER);
        // Replacing may mend a damaged identity, so a load failure only stops a plain install.
        let existing = if replace {
            Self::load(data_dir).ok().flatten()
        } else {
            Self::load(data_dir)?
        };
        if let Some(existing) = existing {
            if existing.fingerprint == self.fingerprint {
                return Ok(());
            }
            if !replace {
                return Err(UmsIdError::Different {
                    existing: existing.fingerprint.short(),
                    restored: self.fingerprint.short(),
                });
            }
        }
        let staging = tempfile::Builder::new()
            .prefix(".ums-id-")
            .tempdir_in(data_dir)
            .map_err(|source| WriteError::Io {
                path: data_dir.to_owned(),
                source,
            })?;
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o700)).map_err(
            |source| WriteError::Io {
                path: staging.path().to_owned(),
                source,
            },
        )?;
        let meta = serde_json::to_string_pretty(&Meta {
            created_at: self.created_at.format(&Rfc3339).unwrap_or_default(),
        })
        .unwrap_or_default();
        files::write_private(
            &staging.path().join(KEY_FILE),
            self.key_pair.serialize_pem().as_bytes(),
            false,
        )?;
        files::write_private(
            &staging.path().join(CERT_FILE),
            self.certificate_pem.as_bytes(),
            false,
        )?;
        files::write_private(&staging.path().join(META_FILE), meta.as_bytes(), false)?;
        let staged = staging.keep();
        let io = |source| {
            UmsIdError::Write(WriteError::Io {
                path: folder.clone(),
                source,
            })
        };
        if replace && folder.exists() {
            // Move the old identity aside first; it is removed once the new one is in place.
            let old = data_dir.join(REPLACED);
            let _ = fs::remove_dir_all(&old);
            fs::rename(&folder, &old).map_err(io)?;
            if let Err(error) = fs::rename(&staged, &folder) {
                let _ = fs::rename(&old, &folder);
                let _ = fs::remove_dir_all(&staged);
                return Err(io(error));
            }
            files::sync_folder(data_dir).map_err(io)?;
            let _ = fs::remove_dir_all(&old);
        } else if let Err(error) = fs::rename(&staged, &folder) {
            let _ = fs::remove_dir_all(&staged);
            // Lost a race with another process creating it.
            if folder.exists() {
                return Err(UmsIdError::Different {
                    existing: "created concurrently".into(),
                    restored: self.fingerprint.short(),
                });
            }
            return Err(io(error));
        }
        files::sync_folder(data_dir).map_err(io)
    }

    /// The backup: creation time, private key and certificate, as one text file.
    pub fn backup(&self) -> String {
        format!(
            "{BACKUP_HEADER}\ncreated_at: {}\n{}{}",
            self.created_at.format(&Rfc3339).unwrap_or_default(),
            self.key_pair.serialize_pem(),
            self.certificate_pem
        )
    }

    /// Reads a backup written by [`UmsId::backup`]; `path` is named in errors.
    pub fn from_backup(text: &str, path: &Path) -> Result<Self, UmsIdError> {
        let damaged = |reason: &str| UmsIdError::Damaged {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if !text.starts_with(BACKUP_HEADER) {
            return Err(damaged(
                "not a ums-stub UMS ID backup (its first line is not the backup header)",
            ));
        }
        let created_at = text
            .lines()
            .find_map(|line| line.strip_prefix("created_at: "))
            .and_then(|value| OffsetDateTime::parse(value.trim(), &Rfc3339).ok())
            .ok_or_else(|| damaged("no valid created_at line"))?;
        let blocks = pem::parse_many(text).map_err(|_| damaged("the PEM blocks do not parse"))?;
        let key = blocks
            .iter()
            .find(|block| block.tag() == "PRIVATE KEY")
            .ok_or_else(|| damaged("no PRIVATE KEY block"))?;
        let cert = blocks
            .iter()
            .find(|block| block.tag() == "CERTIFICATE")
            .ok_or_else(|| damaged("no CERTIFICATE block"))?;
        Self::from_pems(&pem::encode(key), &pem::encode(cert), created_at, path)
    }

    /// The SHA-256 fingerprint devices pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// When the identity was created.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// The certificate as PEM, for `ums-id export`.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The certificate as DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The key pair, to issue certificates with.
    pub fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }

    /// Secret input for deriving the key-store keys (PKCS#8 DER of the private key).
    pub(crate) fn secret_material(&self) -> Vec<u8> {
        self.key_pair.serialize_der()
    }
}
