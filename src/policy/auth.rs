//! Basic proxy authentication (RFC 9110 §11.7.2 `Proxy-Authorization`, RFC 7617 Basic).
//!
//! Plain passwords are compared in constant time (on SHA-256 digests, so the length does not
//! leak either). Argon2 and bcrypt hashes are verified on the blocking pool, since they are
//! deliberately slow, and a successful credential is remembered (by digest) so a client that
//! sends the same header on every request pays that cost once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, Credential};

/// Most remembered successful credentials; the cache is cleared when it fills.
const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Proxy-Authorization` header.
    #[error("proxy authentication required")]
    Missing,
    /// A header that is not `Basic` with valid base64 `user:password`.
    #[error("malformed Proxy-Authorization header")]
    Malformed,
    /// Unknown user or wrong password (not distinguished, on purpose).
    #[error("invalid proxy credentials")]
    Invalid,
}

/// Checks proxy credentials against the configured users.
#[derive(Debug)]
pub struct Authenticator {
    users: HashMap<String, Arc<Credential>>,
    challenge: HeaderValue,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Authenticator {
    /// Builds the authenticator for `config`.
    pub fn new(config: &AuthConfig) -> Authenticator {
        let users =
            config.users.iter().map(|u| (u.name.clone(), Arc::new(u.credential.clone()))).collect();
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", config.realm))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"sluice\""));
        Authenticator { users, challenge, verified: Mutex::new(HashSet::new()) }
    }

    /// The `Proxy-Authenticate` value sent with 407.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    /// Verifies the request's `Proxy-Authorization`; returns the user name.
    pub async fn check(&self, header: Option<&HeaderValue>) -> Result<String, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (user, password) = parse_basic(header)?;
        let fingerprint: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        if self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&fingerprint) {
            return Ok(user);
        }
        let Some(credential) = self.users.get(&user).cloned() else {
            // Spend the same comparison as for a known user so timing does not reveal names.
            let _ = constant_time_equal(&password, "");
            return Err(AuthError::Invalid);
        };
        let ok = match &*credential {
            Credential::Password(secret) => constant_time_equal(&password, secret.expose()),
            Credential::Argon2(_) | Credential::Bcrypt(_) => {
                let credential = credential.clone();
                tokio::task::spawn_blocking(move || verify_hash(&credential, &password))
                    .await
                    .unwrap_or(false)
            }
        };
        if !ok {
            return Err(AuthError::Invalid);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(fingerprint);
        Ok(user)
    }
}

/// Splits `Basic base64(user:password)`; the scheme name is case-insensitive.
pub fn parse_basic(header: &HeaderValue) -> Result<(String, String), AuthError> {
    let text = header.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| AuthError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
    let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
    Ok((user.to_owned(), password.to_owned()))
}

fn constant_time_equal(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

fn verify_hash(credential: &Credential, password: &str) -> bool {
    match credential {
        Credential::Argon2(phc) => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(phc)
                .and_then(|hash| {
                    argon2::Argon2::default().verify_password(password.as_bytes(), &hash)
                })
                .is_ok()
        }
        Credential::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        Credential::Password(secret) => constant_time_equal(password, secret.expose()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, User};
    use http::HeaderMap;
    use http::header::PROXY_AUTHORIZATION;

    fn basic(user: &str, password: &str) -> Option<&'static HeaderValue> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let value = HeaderValue::from_str(&format!("Basic {token}")).unwrap();
        Some(Box::leak(Box::new(value)))
    }

    fn authenticator() -> Authenticator {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"sluice-test-salt").unwrap();
        let argon =
            argon2::Argon2::default().hash_password(b"argon pw", &salt).unwrap().to_string();
        let bcrypt_hash = bcrypt::hash("bcrypt pw", 4).unwrap();
        Authenticator::new(&AuthConfig {
            realm: "test".to_owned(),
            users: vec![
                User {
                    name: "alice".into(),
                    credential: Credential::Password(Secret::new("pw".into())),
                },
                User { name: "argon".into(), credential: Credential::Argon2(argon) },
                User { name: "bcrypt".into(), credential: Credential::Bcrypt(bcrypt_hash) },
            ],
        })
    }

    #[tokio::test]
    async fn every_credential_kind_verifies() {
        let auth = authenticator();
        assert_eq!(auth.check(basic("alice", "pw")).await, Ok("alice".into()));
        assert_eq!(auth.check(basic("argon", "argon pw")).await, Ok("argon".into()));
        assert_eq!(auth.check(basic("bcrypt", "bcrypt pw")).await, Ok("bcrypt".into()));
        // Cached success still answers the same.
        assert_eq!(auth.check(basic("argon", "argon pw")).await, Ok("argon".into()));
    }

    #[tokio::test]
    async fn wrong_missing_and_malformed_credentials_are_refused() {
        let auth = authenticator();
        assert_eq!(auth.check(basic("alice", "nope")).await, Err(AuthError::Invalid));
        assert_eq!(auth.check(basic("mallory", "pw")).await, Err(AuthError::Invalid));
        assert_eq!(auth.check(basic("argon", "wrong")).await, Err(AuthError::Invalid));
        assert_eq!(
            auth.check(HeaderMap::new().get(PROXY_AUTHORIZATION)).await,
            Err(AuthError::Missing)
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(auth.check(bearer.get(PROXY_AUTHORIZATION)).await, Err(AuthError::Malformed));
        let mut junk = HeaderMap::new();
        junk.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(auth.check(junk.get(PROXY_AUTHORIZATION)).await, Err(AuthError::Malformed));
        assert_eq!(auth.challenge(), "Basic realm=\"test\"");
    }

    #[test]
    fn basic_scheme_is_case_insensitive_and_password_may_hold_colons() {
        let value = HeaderValue::from_str(&format!(
            "bAsIc {}",
            base64::engine::general_purpose::STANDARD.encode("u:p:q")
        ))
        .unwrap();
        assert_eq!(parse_basic(&value), Ok(("u".into(), "p:q".into())));
    }
}
