//! Who may do what: bearer tokens with roles.
//!
//! Tokens are random strings handed to people and machines once (`agentctl tokens create`); the
//! daemon only stores the sha256 of each, in the config or a tokens file. A presented token is
//! hashed and compared against every stored hash in constant time, and tokens never appear in
//! logs or errors. The token's *name* is written into every record it causes (audit trail).
//!
//! With no tokens configured and a loopback listen address, authentication is off (the embedded
//! quick start). With no tokens on any other address the daemon refuses to start unless the
//! operator passes `--insecure-no-auth`.

mod roles;

pub use roles::{Permission, Role};

use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Prefix of every agentd token, so leaked ones are easy to grep for and to recognise
/// (`agentctl tokens create` writes it; the daemon accepts any configured hash).
#[cfg(test)]
pub const TOKEN_PREFIX: &str = "agtk_";

/// One configured token: a name for audit, a role, and the hash of the secret.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Lowercase hex sha256 of the token text.
    pub sha256: String,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name, recorded as the actor of every event the request causes; `None` when
    /// authentication is off.
    pub name: Option<String>,
    pub role: Role,
}

impl Caller {
    /// The caller when authentication is off: may do everything, recorded as no one.
    pub fn anonymous_admin() -> Caller {
        Caller {
            name: None,
            role: Role::Admin,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("role {role} may not {action}")]
    Forbidden {
        role: &'static str,
        action: &'static str,
    },
}

/// Why the token configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("token {name:?}: sha256 must be 64 lowercase hex characters")]
    BadHash { name: String },
    #[error("token name {0:?} is used twice")]
    DuplicateName(String),
    /// The IO error is the `source`, not part of the message, so a cause chain prints it once.
    #[error("cannot read tokens file {path}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The TOML error (line, column, snippet) is the `source`, printed once by a cause chain.
    #[error("invalid tokens file {path}")]
    Parse {
        path: std::path::PathBuf,
        source: toml::de::Error,
    },
    #[error(
        "refusing to listen on {addr} without authentication: anyone who can reach it could read \
         trajectories and change jobs. Create a token with `agentctl tokens create --role admin --name me` \
         and add the printed line to the [auth] section of the config, or pass --insecure-no-auth"
    )]
    OpenWithoutTokens { addr: SocketAddr },
}

/// The set of valid tokens (hashes only).
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    entries: Vec<([u8; 32], TokenEntry)>,
}

impl TokenStore {
    /// Builds the store, validating every entry.
    pub fn new(entries: Vec<TokenEntry>) -> Result<TokenStore, AuthConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            if !seen.insert(entry.name.clone()) {
                return Err(AuthConfigError::DuplicateName(entry.name));
            }
            let digest = parse_hash(&entry.sha256).ok_or_else(|| AuthConfigError::BadHash {
                name: entry.name.clone(),
            })?;
            parsed.push((digest, entry));
        }
        Ok(TokenStore { entries: parsed })
    }

    /// Reads `[[tokens]]` entries from a TOML file (same shape as the config's `[auth]`).
    pub fn load_file(path: &std::path::Path) -> Result<Vec<TokenEntry>, AuthConfigError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TokensFile {
            #[serde(default)]
            tokens: Vec<TokenEntry>,
        }
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.into(),
            source,
        })?;
        let file: TokensFile = toml::from_str(&text).map_err(|source| AuthConfigError::Parse {
            path: path.into(),
            source,
        })?;
        Ok(file.tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Finds the entry for a presented token. Compares against every stored hash without
    /// stopping early, so timing does not reveal which hash (or how much of it) matched.
    pub fn authenticate(&self, presented: &str) -> Result<Caller, AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&TokenEntry> = None;
        for (stored, entry) in &self.entries {
            if constant_time_eq(stored, &digest) {
                found = Some(entry);
            }
        }
        found
            .map(|entry| Caller {
                name: Some(entry.name.clone()),
                role: entry.role,
            })
            .ok_or(AuthError::InvalidToken)
    }
}

/// Decides what a request with an optional `Authorization` header value may do.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: TokenStore,
}

impl Authenticator {
    /// `insecure_no_auth` allows an empty token store on a non-loopback address.
    pub fn new(
        tokens: TokenStore,
        listen: SocketAddr,
        insecure_no_auth: bool,
    ) -> Result<Authenticator, AuthConfigError> {
        if tokens.is_empty() && !listen.ip().is_loopback() && !insecure_no_auth {
            return Err(AuthConfigError::OpenWithoutTokens { addr: listen });
        }
        Ok(Authenticator { tokens })
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Authenticates a request and checks that its role has `permission`.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        permission: Permission,
    ) -> Result<Caller, AuthError> {
        if !self.enabled() {
            return Ok(Caller::anonymous_admin());
        }
        let header = authorization.ok_or(AuthError::MissingToken)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::MissingToken)?;
        let caller = self.tokens.authenticate(token.trim())?;
        if caller.role.allows(permission) {
            Ok(caller)
        } else {
            Err(AuthError::Forbidden {
                role: caller.role.as_str(),
                action: permission.describe(),
            })
        }
    }
}

/// The sha256 (lowercase hex) under which a token is stored (`agentctl tokens create` computes
/// the same).
#[cfg(test)]
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        difference |= x ^ y;
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(role: Role) -> (TokenStore, String) {
        let token = format!("{TOKEN_PREFIX}{}", "ab".repeat(32));
        let store = TokenStore::new(vec![TokenEntry {
            name: "box-3".into(),
            role,
            sha256: token_hash(&token),
        }])
        .unwrap();
        (store, token)
    }

    #[test]
    fn tokens_authenticate_by_hash_and_roles_gate_permissions() {
        let (store, token) = store_with(Role::Worker);
        let auth = Authenticator::new(store, "0.0.0.0:7070".parse().unwrap(), false).unwrap();
        let bearer = format!("Bearer {token}");
        let caller = auth.authorize(Some(&bearer), Permission::Work).unwrap();
        assert_eq!(caller.name.as_deref(), Some("box-3"));
        assert_eq!(
            auth.authorize(Some(&bearer), Permission::Admin),
            Err(AuthError::Forbidden {
                role: "worker",
                action: Permission::Admin.describe()
            })
        );
        assert_eq!(
            auth.authorize(None, Permission::Read),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            auth.authorize(Some("Bearer agtk_nope"), Permission::Read),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            auth.authorize(Some(&token), Permission::Read),
            Err(AuthError::MissingToken),
            "the Bearer scheme is required"
        );
    }

    #[test]
    fn role_matrix() {
        use Permission::*;
        let cases = [
            (
                Role::Admin,
                [Read, Submit, Work, Admin],
                [true, true, true, true],
            ),
            (
                Role::Submit,
                [Read, Submit, Work, Admin],
                [false, true, false, false],
            ),
            (
                Role::Worker,
                [Read, Submit, Work, Admin],
                [false, false, true, false],
            ),
            (
                Role::Read,
                [Read, Submit, Work, Admin],
                [true, false, false, false],
            ),
        ];
        for (role, permissions, expected) in cases {
            for (permission, allowed) in permissions.into_iter().zip(expected) {
                assert_eq!(role.allows(permission), allowed, "{role:?} {permission:?}");
            }
        }
    }

    #[test]
    fn open_addresses_need_tokens_unless_explicitly_insecure() {
        let loopback = "127.0.0.1:7070".parse().unwrap();
        let open = "0.0.0.0:7070".parse().unwrap();
        assert!(Authenticator::new(TokenStore::default(), loopback, false).is_ok());
        let error = Authenticator::new(TokenStore::default(), open, false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("agentctl tokens create"), "{error}");
        assert!(Authenticator::new(TokenStore::default(), open, true).is_ok());
    }

    #[test]
    fn bad_entries_are_refused() {
        let bad = TokenEntry {
            name: "x".into(),
            role: Role::Read,
            sha256: "ABC".into(),
        };
        assert!(matches!(
            TokenStore::new(vec![bad]),
            Err(AuthConfigError::BadHash { .. })
        ));
        let hash = token_hash("agtk_x");
        let twice = vec![
            TokenEntry {
                name: "x".into(),
                role: Role::Read,
                sha256: hash.clone(),
            },
            TokenEntry {
                name: "x".into(),
                role: Role::Admin,
                sha256: hash,
            },
        ];
        assert!(matches!(
            TokenStore::new(twice),
            Err(AuthConfigError::DuplicateName(_))
        ));
    }
}
