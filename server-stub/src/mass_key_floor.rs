//! The floor for a typed mass-deployment key, pure: at least [`MIN_TYPED_MASS_KEY_CHARS`]
//! characters and a strength estimate of at least [`MIN_SCORE`].
//!
//! A mass key is used any number of times and by any device, so it is the one key an online
//! dictionary attack can aim at: the rate limits bound guesses per source and window, and this
//! floor keeps the value out of the first few hundred million guesses of such a dictionary. The
//! estimate is zxcvbn's (Dropbox's estimator: lists of common passwords, names and English words,
//! keyboard patterns, repeats, sequences, dates), not a hand-kept list. Random values (17 digits
//! from the OS CSPRNG) never pass through here. [`KeyAdmin::create_mass`] applies it, so every
//! surface that types a mass key (the command line, the admin API and the Web App over it) meets
//! it; a mass key's value cannot be changed afterwards.
//!
//! [`KeyAdmin::create_mass`]: crate::keys::KeyAdmin::create_mass

use zxcvbn::Score;

/// The fewest characters of a typed mass-deployment key (the admin API's schema states it too).
pub const MIN_TYPED_MASS_KEY_CHARS: usize = 16;

/// The lowest zxcvbn score a typed mass-deployment key may have: `Four`, an estimated 10^10
/// guesses or more. Sixteen characters make it easy to reach with a few uncommon words or with
/// noise, and it leaves out the season-year-season and product-name phrases that `Three` lets
/// through ("Summer2026Summer" scores 10^8).
pub const MIN_SCORE: Score = Score::Four;

/// Words an attacker would try first against this product's keys: the estimate counts them as
/// known, like the words of its dictionaries.
const CONTEXT_WORDS: [&str; 6] = ["igel", "ums", "onboard", "onboarding", "mass", "deployment"];

/// Why a typed value cannot be a mass-deployment key. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakMassKey {
    /// Shorter than [`MIN_TYPED_MASS_KEY_CHARS`].
    #[error(
        "password: a typed mass-deployment key has at least {MIN_TYPED_MASS_KEY_CHARS} \
         characters; leave the password out for a random key"
    )]
    TooShort,
    /// Long enough, but below [`MIN_SCORE`].
    #[error(
        "password: too guessable for a mass-deployment key{}; add words or characters that do \
         not follow a pattern, or leave the password out for a random key",
        .warning.as_deref().map(|warning| format!(" ({warning})")).unwrap_or_default()
    )]
    TooGuessable {
        /// zxcvbn's warning, a sentence about the pattern found ("This is a very common
        /// password."), never the value.
        warning: Option<String>,
    },
}

/// Checks a typed mass-deployment key against the floor.
pub fn check(password: &str) -> Result<(), WeakMassKey> {
    if password.chars().count() < MIN_TYPED_MASS_KEY_CHARS {
        return Err(WeakMassKey::TooShort);
    }
    let estimate = zxcvbn::zxcvbn(password, &CONTEXT_WORDS);
    if estimate.score() < MIN_SCORE {
        return Err(WeakMassKey::TooGuessable {
            warning: estimate
                .feedback()
                .and_then(|feedback| feedback.warning())
                .map(|warning| warning.to_string()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_mass_keys_meet_the_floor() {
        enum Expect {
            Pass,
            Short,
            Guessable,
        }
        use Expect::{Guessable, Pass, Short};
        let table: &[(&str, Expect)] = &[
            // The dictionary attack of the issue: short, and a common password.
            ("password1234", Short),
            ("Rollout 2026", Short),
            // 15 characters of noise: the length rule alone.
            ("Xq7#vLp2@mR9zKw", Short),
            // Long enough but on the lists, or patterns.
            ("passwordpassword", Guessable),
            ("password12345678", Guessable),
            ("1234567890123456", Guessable),
            ("aaaaaaaaaaaaaaaa", Guessable),
            ("qwertyuiopasdfgh", Guessable),
            ("abcdefghijklmnop", Guessable),
            ("IGEL UMS onboard", Guessable),
            ("iloveyouiloveyou", Guessable),
            ("Summer2026Summer", Guessable),
            ("P@ssw0rdP@ssw0rd", Guessable),
            // Passphrases and noise of 16 or more.
            ("Xq7#vLp2@mR9zKw!", Pass),
            ("Rollout Berlin lab 4 west wing", Pass),
            ("correct horse battery staple", Pass),
            ("Märzrollout-Lager7-Halle3", Pass),
            ("mass deployment key", Pass),
        ];
        for (password, expect) in table {
            let outcome = check(password);
            let ok = match expect {
                Pass => outcome.is_ok(),
                Short => outcome == Err(WeakMassKey::TooShort),
                Guessable => matches!(outcome, Err(WeakMassKey::TooGuessable { .. })),
            };
            assert!(ok, "{password:?}: {outcome:?}");
        }
    }

    #[test]
    fn the_length_counts_characters_not_bytes() {
        // 15 characters, 30 bytes.
        assert_eq!(check(&"ä".repeat(15)), Err(WeakMassKey::TooShort));
    }

    #[test]
    fn a_refusal_says_why_and_never_holds_the_value() {
        let password = "password12345678";
        let refusal = check(password).unwrap_err();
        let text = refusal.to_string();
        assert!(text.starts_with("password: too guessable"), "{text}");
        assert!(!text.contains(password), "{text}");
        assert!(!format!("{refusal:?}").contains(password));
        let short = check("hunter2").unwrap_err().to_string();
        assert!(short.contains("at least 16 characters"), "{short}");
        assert!(!short.contains("hunter2"));
    }
}
