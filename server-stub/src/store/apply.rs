//! The decisions of the store, applied once for both backends.

use onboard_protocol::ProblemCode;
use onboard_protocol::admin::Right;

use super::error::StoreError;
use super::rows::{EnrollAttempt, EnrollOutcome};
use crate::vault::LookupDigest;

/// The keys of one attempt tried in order inside one transaction (the Basic key, then the
/// alternates), and what they came to. The backends loop over [`KeyTries::lookups`], try each
/// key, and hand its outcome to [`KeyTries::take`]; so the order and the stopping rule live once.
#[derive(Debug, Default)]
pub(crate) struct KeyTries {
    refused: Vec<(usize, ProblemCode)>,
    alternates: bool,
}

impl KeyTries {
    /// Tries for `attempt`, and its keys in the order to try them.
    pub(crate) fn new(
        attempt: &EnrollAttempt,
    ) -> (KeyTries, impl Iterator<Item = (usize, &LookupDigest)>) {
        let tries = KeyTries {
            refused: Vec::new(),
            alternates: !attempt.alternates.is_empty(),
        };
        let lookups = std::iter::once(&attempt.lookup)
            .chain(&attempt.alternates)
            .enumerate();
        (tries, lookups)
    }

    /// What key `index` came to; the attempt's outcome when it ends here (a certificate, or a
    /// refusal final for the device), `None` to try the next key.
    pub(crate) fn take(&mut self, index: usize, outcome: EnrollOutcome) -> Option<EnrollOutcome> {
        match outcome {
            EnrollOutcome::Issued {
                device, repeated, ..
            } => Some(EnrollOutcome::Issued {
                device,
                repeated,
                key: index,
                refused: std::mem::take(&mut self.refused),
            }),
            EnrollOutcome::Refused(code) => {
                self.refused.push((index, code));
                (!code.is_final_for_key()).then(|| self.finish())
            }
            EnrollOutcome::RefusedEach(each) => {
                self.refused.extend(each);
                None
            }
        }
    }

    /// Every key tried was refused.
    pub(crate) fn finish(&mut self) -> EnrollOutcome {
        let refused = std::mem::take(&mut self.refused);
        match refused.as_slice() {
            [(0, code)] if !self.alternates => EnrollOutcome::Refused(*code),
            _ => EnrollOutcome::RefusedEach(refused),
        }
    }
}

/// Applies [`crate::rights::leaves_no_admin`] for a backend: `before` is `name`'s rights and
/// `admins` the number of accounts with server:admin, both read inside the transaction that
/// changes `name` to `after` (`None`: deletes it), under a lock no other such change passes.
pub(crate) fn keep_an_admin(
    name: &str,
    before: &[Right],
    after: Option<&[Right]>,
    admins: u64,
) -> Result<(), StoreError> {
    use crate::rights::{self, CredentialError, Rights};
    let admins = usize::try_from(admins).unwrap_or(usize::MAX);
    if rights::leaves_no_admin(Rights::of(before), after.map(Rights::of), admins) {
        return Err(StoreError::Conflict(
            CredentialError::LastAdmin(name.to_owned()).to_string(),
        ));
    }
    Ok(())
}
