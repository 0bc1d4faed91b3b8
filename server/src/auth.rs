//! Who may do what: bearer tokens, each naming one tenant. JWTs (HS256
//! with a shared secret; RS256 or ES256 with a public key) as application
//! auth servers issue them, the tenant in a claim, expiry checked; static
//! tokens from a file of their SHA-256 hashes. No token, or one that does
//! not check out: 401. A token never appears in a log or an answer.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How the server checks tokens.
pub struct Auth {
    jwt: Vec<(DecodingKey, Validation)>,
    tokens: HashMap<[u8; 32], String>,
    claim: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt_keys", &self.jwt.len())
            .field("static_tokens", &self.tokens.len())
            .field("claim", &self.claim)
            .finish()
    }
}

/// Where the server's token settings come from.
#[derive(Default, Clone)]
pub struct AuthSettings {
    /// HS256 shared secret (`--jwt-secret`, `NEXUS_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 (an RSA key) or ES256 (a P-256 key).
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// A file of static tokens: one `TENANT SHA256-HEX` per line.
    pub tokens: Option<std::path::PathBuf>,
    /// The JWT claim that names the tenant (default `tenant`).
    pub tenant_claim: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<hidden>"))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("tokens", &self.tokens)
            .field("tenant_claim", &self.tenant_claim)
            .finish()
    }
}

/// Why the settings do not make a way to check tokens.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(String);

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    // `exp` is required and checked (with a minute of leeway for clocks).
    v.set_required_spec_claims(&["exp"]);
    v.leeway = 60;
    v.validate_aud = false;
    v
}

/// The SHA-256 of a token, as the tokens file holds it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Builds the checks from `settings`; at least one way is needed.
    pub fn new(settings: &AuthSettings) -> Result<Auth, AuthSetupError> {
        let mut jwt = Vec::new();
        if let Some(secret) = &settings.jwt_secret {
            if secret.len() < 16 {
                return Err(AuthSetupError(
                    "the JWT secret is too short: use at least 16 bytes (32 random bytes are usual)"
                        .into(),
                ));
            }
            jwt.push((
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256),
            ));
        }
        if let Some(path) = &settings.jwt_public_key {
            jwt.push(public_key(path)?);
        }
        let tokens = match &settings.tokens {
            Some(path) => read_tokens(path)?,
            None => HashMap::new(),
        };
        if jwt.is_empty() && tokens.is_empty() {
            return Err(AuthSetupError(
                "no way to check tokens: give --jwt-secret (or NEXUS_JWT_SECRET), --jwt-public-key FILE or --tokens FILE"
                    .into(),
            ));
        }
        let claim = settings
            .tenant_claim
            .clone()
            .unwrap_or_else(|| "tenant".to_string());
        Ok(Auth { jwt, tokens, claim })
    }

    /// The tenant that the request's `Authorization` header may act for.
    pub fn tenant(&self, authorization: Option<&str>) -> Result<String, ApiError> {
        let Some(value) = authorization else {
            return Err(ApiError::unauthorized(
                "no token: send `Authorization: Bearer <token>`",
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        if let Some(tenant) = self.tokens.get(&token_hash(token)) {
            return Ok(tenant.clone());
        }
        if self.jwt.is_empty() {
            return Err(ApiError::unauthorized("the token is not known"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthorized("the token is neither known nor a JWT"))?;
        let mut last = None;
        for (key, validation) in &self.jwt {
            if !validation.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, key, validation,
            ) {
                Ok(data) => {
                    return match data.claims.get(&self.claim) {
                        Some(serde_json::Value::String(t)) if !t.is_empty() => Ok(t.clone()),
                        _ => Err(ApiError::unauthorized(format!(
                            "the token has no tenant: its claim {:?} is missing or not a string",
                            self.claim
                        ))),
                    };
                }
                Err(e) => last = Some(e),
            }
        }
        use jsonwebtoken::errors::ErrorKind;
        Err(ApiError::unauthorized(
            match last.as_ref().map(|e| e.kind()) {
                Some(ErrorKind::ExpiredSignature) => "the token has expired".to_string(),
                Some(ErrorKind::InvalidSignature) => {
                    "the token's signature does not check".to_string()
                }
                Some(ErrorKind::MissingRequiredClaim(c)) => format!("the token has no {c:?} claim"),
                Some(ErrorKind::ImmatureSignature) => "the token is not valid yet".to_string(),
                None => format!("tokens signed with {:?} are not accepted here", header.alg),
                Some(_) => "the token is not valid".to_string(),
            },
        ))
    }
}

fn public_key(path: &Path) -> Result<(DecodingKey, Validation), AuthSetupError> {
    let pem = std::fs::read(path).map_err(|e| {
        AuthSetupError(format!(
            "cannot read the JWT public key {}: {e}",
            path.display()
        ))
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, validation(Algorithm::RS256)));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, validation(Algorithm::ES256)));
    }
    Err(AuthSetupError(format!(
        "{} is neither an RSA nor an EC (P-256) public key in PEM",
        path.display()
    )))
}

fn read_tokens(path: &Path) -> Result<HashMap<[u8; 32], String>, AuthSetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AuthSetupError(format!(
            "cannot read the tokens file {}: {e}",
            path.display()
        ))
    })?;
    let mut tokens = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            AuthSetupError(format!(
                "{} line {}: {why} (each line is `TENANT SHA256-HEX-OF-TOKEN`)",
                path.display(),
                n + 1
            ))
        };
        let mut parts = line.split_whitespace();
        let (Some(tenant), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected two fields"));
        };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash, &mut digest)
            .map_err(|_| bad("the hash is not 64 hexadecimal digits"))?;
        tokens.insert(digest, tenant.to_string());
    }
    Ok(tokens)
}
