//! Distributed UMS: the cluster secret, the Main UMS ID sealed under it, and the rule that decides
//! which UMS ID a server uses and how the UMS ID page shows it.
//!
//! Every server of a Distributed UMS keeps its **Local UMS ID** in its data directory. The shared
//! database holds the **Main UMS ID**: its certificate in the clear and its backup (private key
//! included) sealed with AES-256-GCM under a key derived from the **cluster secret**, a file every
//! server is given (mode 0600). The database alone therefore reveals no private key, and no key
//! value either, since the key vault derives from the Main UMS ID's private key.
//!
//! [`sync_status`] is pure: the first server on an empty database offers its Local UMS ID as the
//! Main one; every server adopts the Main UMS ID at start; a server without the secret, or with a
//! wrong one, is `Not in sync, please restart server` and refuses enrollments.

use std::path::Path;

use anyhow::{Context, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use base64::Engine;
use onboard_protocol::Fingerprint;
use zeroize::Zeroizing;

use crate::ums_id::UmsId;

/// How often a server records that it runs (its heartbeat in the database).
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A server whose last heartbeat is older than this is shown `Not running`.
pub const RUNNING_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The first line of a cluster secret file.
const SECRET_HEADER: &str =
    "# ums-stub cluster secret: give this file to every server of the cluster, mode 0600";

const SALT: &[u8] = b"ums-stub cluster secret v1";

/// The Main UMS ID as the database keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct MainUmsId {
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Its certificate, PEM (public).
    pub certificate_pem: String,
    /// Its backup (with the private key), sealed under the cluster secret.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for MainUmsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MainUmsId({})", self.fingerprint.short())
    }
}

/// The cluster secret: 32 random bytes every server of one database is given.
pub struct ClusterSecret {
    key: LessSafeKey,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Why a sealed Main UMS ID does not open: the secret is not the one it was sealed under, or the
/// database holds something damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Main UMS ID in the database does not open with this cluster secret (another cluster's \
     secret, or a damaged one)"
)]
pub struct WrongSecret;

impl ClusterSecret {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(bytes);
        let okm = prk
            .expand(&[b"main ums id seal"], &AES_256_GCM)
            .expect("HKDF length");
        Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        }
    }

    /// Writes a new secret to `out` (mode 0600; refuses to replace a file).
    pub fn create(out: &Path) -> anyhow::Result<()> {
        let bytes = Zeroizing::new(crate::random::bytes::<32>());
        let text = Zeroizing::new(format!(
            "{SECRET_HEADER}\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(&bytes[..])
        ));
        crate::files::write_private(out, text.as_bytes(), false)?;
        Ok(())
    }

    /// Reads the secret in `path`. Refuses a file others can read: the secret opens the Main UMS
    /// ID's private key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cluster secret {shown}: cannot read it"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "cluster secret {shown}: its mode is {:o}; others may read it: chmod 600 {shown}",
                mode & 0o777
            );
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cluster secret {shown}: cannot read it"))?,
        );
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .with_context(|| format!("cluster secret {shown}: the file holds no secret"))?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .with_context(|| {
                    format!(
                        "cluster secret {shown}: not a secret made by ums-stub cluster-secret create"
                    )
                })?,
        );
        let mut array = Zeroizing::new([0u8; 32]);
        array.copy_from_slice(&bytes);
        Ok(Self::from_bytes(&array))
    }

    /// Seals `ums_id` (its backup, private key included) as the Main UMS ID.
    pub fn seal(&self, ums_id: &UmsId) -> MainUmsId {
        let fingerprint = ums_id.fingerprint();
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce);
        // The backup holds the private key: wiped when done, with room for the tag reserved so
        // no copy is left behind by a reallocation.
        let backup = Zeroizing::new(ums_id.backup());
        let mut in_out = Zeroizing::new(Vec::with_capacity(backup.len() + AES_256_GCM.tag_len()));
        in_out.extend_from_slice(backup.as_bytes());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(fingerprint.as_bytes()),
                &mut *in_out,
            )
            .expect("AES-GCM sealing");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        MainUmsId {
            fingerprint,
            certificate_pem: ums_id.certificate_pem().to_owned(),
            sealed,
        }
    }

    /// Opens a sealed Main UMS ID.
    pub fn open(&self, main: &MainUmsId) -> Result<UmsId, WrongSecret> {
        if main.sealed.len() < NONCE_LEN {
            return Err(WrongSecret);
        }
        let (nonce, body) = main.sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| WrongSecret)?;
        let mut in_out = Zeroizing::new(body.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(main.fingerprint.as_bytes()), &mut in_out)
            .map_err(|_| WrongSecret)?;
        let text = Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|_| WrongSecret)?);
        let opened = UmsId::from_backup(&text, Path::new("the Main UMS ID in the database"))
            .map_err(|_| WrongSecret)?;
        if opened.fingerprint() != main.fingerprint {
            return Err(WrongSecret);
        }
        Ok(opened)
    }
}

/// How a server stands towards the Main UMS ID, as the UMS ID page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// This server's Local UMS ID is the Main UMS ID.
    Main,
    /// This server uses the Main UMS ID, which another server made.
    InSync,
    /// This server could not adopt the Main UMS ID (no or a wrong cluster secret): it refuses
    /// enrollments until restarted with the right secret.
    NotInSync,
}

impl SyncStatus {
    /// The words of the UMS ID page.
    pub const fn label(self) -> &'static str {
        match self {
            SyncStatus::Main => "Main UMS ID",
            SyncStatus::InSync => "In sync",
            SyncStatus::NotInSync => "Not in sync, please restart server",
        }
    }

    /// Reads a label back.
    pub fn from_label(text: &str) -> Option<Self> {
        [SyncStatus::Main, SyncStatus::InSync, SyncStatus::NotInSync]
            .into_iter()
            .find(|status| status.label() == text)
    }
}

/// What a server found at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The database holds a Main UMS ID.
    pub main_exists: bool,
    /// It is this server's Local UMS ID.
    pub main_is_local: bool,
    /// This server has a cluster secret.
    pub has_secret: bool,
    /// The secret opens the Main UMS ID (false when there is none or no secret).
    pub secret_opens: bool,
}

/// What a server does at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Offer the Local UMS ID as the Main one (the database has none), then look again.
    Offer,
    /// Use the Main UMS ID, with this status.
    Adopt(SyncStatus),
    /// Run with the Local UMS ID, not in sync: refuse enrollments.
    Refuse,
    /// Cannot start: the database has no Main UMS ID and this server no secret to seal one.
    NeedSecret,
}

/// The start rule (pure).
pub fn start(found: Found) -> Start {
    match found {
        Found {
            main_exists: false,
            has_secret: true,
            ..
        } => Start::Offer,
        Found {
            main_exists: false,
            has_secret: false,
            ..
        } => Start::NeedSecret,
        Found {
            secret_opens: true,
            main_is_local,
            ..
        } => Start::Adopt(if main_is_local {
            SyncStatus::Main
        } else {
            SyncStatus::InSync
        }),
        Found { .. } => Start::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_rule_decides_each_case() {
        let table = [
            // exists, is local, has secret, opens => start
            ((false, false, true, false), Start::Offer),
            ((false, false, false, false), Start::NeedSecret),
            ((true, true, true, true), Start::Adopt(SyncStatus::Main)),
            ((true, false, true, true), Start::Adopt(SyncStatus::InSync)),
            ((true, false, true, false), Start::Refuse),
            ((true, false, false, false), Start::Refuse),
            ((true, true, false, false), Start::Refuse),
        ];
        for ((main_exists, main_is_local, has_secret, secret_opens), expected) in table {
            let found = Found {
                main_exists,
                main_is_local,
                has_secret,
                secret_opens,
            };
            assert_eq!(start(found), expected, "{found:?}");
        }
    }

    #[test]
    fn labels_are_the_ums_id_pages_words() {
        for status in [SyncStatus::Main, SyncStatus::InSync, SyncStatus::NotInSync] {
            assert_eq!(SyncStatus::from_label(status.label()), Some(status));
        }
        assert_eq!(
            SyncStatus::NotInSync.label(),
            "Not in sync, please restart server"
        );
    }

    #[test]
    fn a_main_ums_id_opens_only_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("a"), dir.path().join("b"));
        ClusterSecret::create(&ours).unwrap();
        ClusterSecret::create(&theirs).unwrap();
        let secret = ClusterSecret::load(&ours).unwrap();
        let ums_id = UmsId::generate().unwrap();
        let main = secret.seal(&ums_id);
        assert_eq!(main.fingerprint, ums_id.fingerprint());
        let opened = secret.open(&main).unwrap();
        assert_eq!(opened.fingerprint(), ums_id.fingerprint());
        assert_eq!(
            ClusterSecret::load(&theirs)
                .unwrap()
                .open(&main)
                .unwrap_err(),
            WrongSecret
        );
        // The sealed form holds no private key in the clear.
        let pem = ums_id.backup();
        let key_line = pem.lines().nth(3).unwrap();
        assert!(
            !main
                .sealed
                .windows(key_line.len())
                .any(|w| w == key_line.as_bytes())
        );
    }

    #[test]
    fn a_secret_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        ClusterSecret::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = ClusterSecret::load(&path).unwrap_err().to_string();
        assert!(message.contains("chmod 600"), "{message}");
    }
}
