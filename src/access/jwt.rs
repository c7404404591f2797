//! Bearer tokens (access.md, "Credentials", 1): the signature by the configured key with the
//! algorithm the key pins (never the token's choice, never `none`), `exp` required, `nbf`, `iss` and
//! `aud` when configured, with leeway. The token only names the user; roles and devices come from the
//! access file.

use super::file::{JwtKey, JwtSettings};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The keys tokens are checked against, each with its one algorithm.
#[derive(Clone)]
enum Keys {
    One(DecodingKey, Algorithm),
    /// From a JWKS: by `kid`.
    Set(Vec<(Option<String>, DecodingKey, Algorithm)>),
}

/// Checks Bearer tokens against `[jwt]`.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Keys,
    issuer: String,
    audience: String,
    user_claim: String,
    leeway_secs: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (for the log and the metric; the client only sees 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a header that cannot be read.
    #[error("malformed token")]
    Malformed,
    /// The token's `alg` is not the configured one.
    #[error("algorithm not allowed")]
    Algorithm,
    /// No configured key has the token's `kid`.
    #[error("unknown key id")]
    UnknownKey,
    /// Bad signature, expired, not yet valid, wrong issuer or audience, no `exp`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The claim naming the user is missing or not a string.
    #[error("no user claim")]
    NoUser,
}

impl JwtVerifier {
    /// A verifier for `settings`; fails with a message naming what is wrong with the key.
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let keys = match &settings.key {
            JwtKey::Hs256(secret) => Keys::One(DecodingKey::from_secret(secret), Algorithm::HS256),
            JwtKey::PublicKeyPem(pem) => {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                    Keys::One(key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                    Keys::One(key, Algorithm::ES256)
                } else {
                    return Err(
                        "public_key_file: not an RSA or EC (P-256) public key in PEM".into(),
                    );
                }
            }
            JwtKey::Jwks(text) => Keys::Set(jwks(text)?),
        };
        Ok(Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            user_claim: settings.user_claim.clone(),
            leeway_secs: settings.leeway_secs,
        })
    }

    /// The username a valid `token` names.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let (key, algorithm) = match &self.keys {
            Keys::One(key, algorithm) => (key, *algorithm),
            Keys::Set(keys) => keys
                .iter()
                .find(|(kid, _, _)| kid.is_some() && *kid == header.kid)
                .or_else(|| (keys.len() == 1 && header.kid.is_none()).then(|| &keys[0]))
                .map(|(_, key, algorithm)| (key, *algorithm))
                .ok_or(TokenError::UnknownKey)?,
        };
        if header.alg != algorithm {
            return Err(TokenError::Algorithm);
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if self.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&self.issuer]);
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.audience]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|error| TokenError::Invalid(error.to_string()))?;
        match data.claims.get(&self.user_claim) {
            Some(serde_json::Value::String(user)) if !user.is_empty() => Ok(user.clone()),
            _ => Err(TokenError::NoUser),
        }
    }
}

/// The signing keys of a JWKS, each with the algorithm it declares (or its key type's usual one).
fn jwks(text: &str) -> Result<Vec<(Option<String>, DecodingKey, Algorithm)>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|error| format!("jwks_file: {error}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let key = DecodingKey::from_jwk(jwk).map_err(|error| format!("jwks_file: {error}"))?;
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(declared), _) => declared
                .to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("jwks_file: unsupported alg {declared}"))?,
            (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
            (None, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) => Algorithm::HS256,
            (None, _) => return Err("jwks_file: a key without alg of an unsupported type".into()),
        };
        if !matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(format!(
                "jwks_file: {algorithm:?} is not one of HS256, RS256, ES256"
            ));
        }
        keys.push((jwk.common.key_id.clone(), key, algorithm));
    }
    if keys.is_empty() {
        return Err("jwks_file: no keys".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn settings(key: JwtKey) -> JwtSettings {
        JwtSettings {
            key,
            issuer: "https://idp.example.com".into(),
            audience: String::new(),
            user_claim: "preferred_username".into(),
            leeway_secs: 0,
        }
    }

    fn claims(user: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({"preferred_username": user, "iss": "https://idp.example.com", "exp": exp})
    }

    /// A key pair of `algorithm` made now: the verifier's public PEM and the signer's key.
    fn key_pair(algorithm: &'static rcgen::SignatureAlgorithm) -> (Vec<u8>, EncodingKey) {
        let pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let private = pair.serialize_pem();
        let signer = if algorithm == &rcgen::PKCS_RSA_SHA256 {
            EncodingKey::from_rsa_pem(private.as_bytes()).unwrap()
        } else {
            EncodingKey::from_ec_pem(private.as_bytes()).unwrap()
        };
        (pair.public_key_pem().into_bytes(), signer)
    }

    #[test]
    fn public_keys_pin_rs256_and_es256() {
        for (algorithm, alg) in [
            (&rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        ] {
            let (public, signer) = key_pair(algorithm);
            let verifier =
                JwtVerifier::new(&settings(JwtKey::PublicKeyPem(public.clone()))).unwrap();
            let token = encode(&Header::new(alg), &claims("agent1", now() + 60), &signer).unwrap();
            assert_eq!(verifier.verify(&token), Ok("agent1".to_owned()), "{alg:?}");
            // The public key used as an HS256 secret (the classic confusion) is refused.
            let forged = encode(
                &Header::new(Algorithm::HS256),
                &claims("root", now() + 60),
                &EncodingKey::from_secret(&public),
            )
            .unwrap();
            assert_eq!(
                verifier.verify(&forged),
                Err(TokenError::Algorithm),
                "{alg:?}"
            );
            let expired =
                encode(&Header::new(alg), &claims("agent1", now() - 10), &signer).unwrap();
            assert!(matches!(
                verifier.verify(&expired),
                Err(TokenError::Invalid(_))
            ));
            let wrong_issuer = serde_json::json!({"preferred_username": "agent1", "iss": "https://other", "exp": now() + 60});
            let token = encode(&Header::new(alg), &wrong_issuer, &signer).unwrap();
            assert!(matches!(
                verifier.verify(&token),
                Err(TokenError::Invalid(_))
            ));
            let no_user = serde_json::json!({"sub": "agent1", "iss": "https://idp.example.com", "exp": now() + 60});
            let token = encode(&Header::new(alg), &no_user, &signer).unwrap();
            assert_eq!(verifier.verify(&token), Err(TokenError::NoUser));
        }
    }

    #[test]
    fn a_jwks_key_is_chosen_by_kid() {
        let secret = b"a-jwks-secret-of-at-least-32-bytes!!";
        let k = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret);
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "one", "alg": "HS256", "k": k},
            {"kty": "oct", "kid": "two", "alg": "HS256", "k": "c2Vjb25kLXNlY3JldC1vZi1hdC1sZWFzdC0zMi1ieXRlcw"},
        ]})
        .to_string();
        let verifier = JwtVerifier::new(&settings(JwtKey::Jwks(jwks))).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("one".into());
        let signer = EncodingKey::from_secret(secret);
        let token = encode(&header, &claims("agent1", now() + 60), &signer).unwrap();
        assert_eq!(verifier.verify(&token), Ok("agent1".to_owned()));
        header.kid = Some("two".into());
        let token = encode(&header, &claims("agent1", now() + 60), &signer).unwrap();
        assert!(matches!(
            verifier.verify(&token),
            Err(TokenError::Invalid(_))
        ));
        header.kid = Some("three".into());
        let token = encode(&header, &claims("agent1", now() + 60), &signer).unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::UnknownKey));
        header.kid = None;
        let token = encode(&header, &claims("agent1", now() + 60), &signer).unwrap();
        assert_eq!(
            verifier.verify(&token),
            Err(TokenError::UnknownKey),
            "two keys: a kid is needed"
        );
    }
}
