//! Passwords: argon2id PHC strings (`callgate hash-password`) and their verification.
//!
//! Verifying costs ~20 ms of one core and 19 MiB by design (argon2id, m=19456 KiB, t=2, p=1: the
//! OWASP minimum); callers bound how many run at once and run them off the runtime's threads.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// The PHC string (argon2id, default parameters, a fresh random salt) of `password`.
pub fn hash(password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| HashError(error.to_string()))
}

/// Whether `phc` is an argon2id PHC string that [`verify`] can check.
pub fn is_argon2id(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        hash.algorithm == Algorithm::Argon2id.ident() && hash.hash.is_some() && hash.salt.is_some()
    })
}

/// Whether `password` matches `phc` (false for a string that is not a valid hash).
pub fn verify(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(is_argon2id(&phc));
        assert!(verify(&phc, b"correct horse"));
        assert!(!verify(&phc, b"correct horse "));
        assert!(!verify("not a hash", b"correct horse"));
        // Two hashes of one password differ by their salt.
        assert_ne!(phc, hash(b"correct horse").unwrap());
    }

    #[test]
    fn other_strings_are_not_argon2id_hashes() {
        assert!(!is_argon2id(""));
        assert!(!is_argon2id("secret"));
        assert!(!is_argon2id(
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Tf3Ls3bX3RHH0bF7mK3tJQ"
        ));
    }
}
