//! Basic auth against bcrypt hashes (`basic_auth_users`). bcrypt is slow on
//! purpose (50-200 ms at cost 10), so it runs on a blocking thread, never the
//! runtime thread that also drains the kernel's events, one check at a time
//! so that bad passwords cannot eat the cores; a good password is remembered
//! for a minute, so a scraper pays for it once, not every scrape.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bcrypt::HashParts;
use hyper::header::HeaderValue;
use tokio::sync::Semaphore;

use super::Problem;

/// How long a verified password is taken without bcrypt.
const REMEMBER: Duration = Duration::from_secs(60);
/// Verified passwords remembered at most (the list starts over past that).
const REMEMBERED_MAX: usize = 1024;

/// The users and their bcrypt hashes, each hash checked well-formed.
#[derive(Debug)]
pub struct Users(BTreeMap<String, String>);

impl Users {
    /// None for no users: no basic auth.
    pub fn new(users: BTreeMap<String, String>) -> Result<Option<Users>, Problem> {
        for (user, hash) in &users {
            let parts: HashParts = hash.parse().map_err(|e| {
                Problem::setting(
                    format!("basic_auth_users.{user}"),
                    format!("not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"),
                )
            })?;
            if !(4..=31).contains(&parts.get_cost()) {
                return Err(Problem::setting(
                    format!("basic_auth_users.{user}"),
                    format!("bcrypt cost {} is outside 4..31", parts.get_cost()),
                ));
            }
        }
        Ok((!users.is_empty()).then_some(Users(users)))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Checks credentials; shared by every version of the configuration.
pub struct Gate {
    /// SHA-256 of (user, hash, password) -> when bcrypt said yes.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    bcrypt_turn: Semaphore,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            verified: Mutex::new(HashMap::new()),
            bcrypt_turn: Semaphore::new(1),
        }
    }

    /// Whether the request's Authorization header names a user with its password.
    pub async fn admits(&self, users: &Users, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        // An unknown user still costs a bcrypt check (against any user's
        // hash, so the same cost), or timing would tell which users exist.
        let (hash, known) = match users.0.get(&user) {
            Some(hash) => (hash, true),
            None => (
                users.0.values().next().expect("users are never empty"),
                false,
            ),
        };
        let key = digest(&user, hash, &password);
        if known && self.remembers(&key) {
            return true;
        }
        let Ok(_turn) = self.bcrypt_turn.acquire().await else {
            return false;
        };
        // Another request may have verified the same password meanwhile.
        if known && self.remembers(&key) {
            return true;
        }
        let hash = hash.clone();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|verified| verified.unwrap_or(false));
        if matches && known {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= REMEMBERED_MAX {
                verified.retain(|_, at| at.elapsed() < REMEMBER);
                if verified.len() >= REMEMBERED_MAX {
                    verified.clear();
                }
            }
            verified.insert(key, Instant::now());
        }
        matches && known
    }

    fn remembers(&self, key: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.get(key).is_some_and(|at| at.elapsed() < REMEMBER)
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn credentials(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let (scheme, encoded) = header.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// What a verified password is remembered by: never the password itself.
/// The hash is part of it, so a changed configuration forgets old passwords.
fn digest(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part);
    }
    context
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(pairs: &[(&str, &str)]) -> Result<Option<Users>, String> {
        Users::new(
            pairs
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect(),
        )
        .map_err(|e| e.to_string())
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        HeaderValue::from_str(&value).unwrap()
    }

    #[test]
    fn bad_hashes_name_the_user() {
        assert!(users(&[]).unwrap().is_none());
        let e = users(&[("alice", "plaintext")]).unwrap_err();
        assert!(
            e.starts_with("basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
        let e = users(&[(
            "bob",
            "$2y$99$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze",
        )])
        .unwrap_err();
        assert!(e.contains("cost 99"), "{e}");
    }

    #[tokio::test]
    async fn right_wrong_unknown_and_malformed_credentials() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = users(&[("alice", &hash)]).unwrap().unwrap();
        let gate = Gate::new();
        assert!(gate.admits(&users, Some(&basic("alice", "s3cret"))).await);
        // Remembered: the second time skips bcrypt, same answer.
        assert!(gate.admits(&users, Some(&basic("alice", "s3cret"))).await);
        assert!(!gate.admits(&users, Some(&basic("alice", "wrong"))).await);
        assert!(!gate.admits(&users, Some(&basic("mallory", "s3cret"))).await);
        assert!(!gate.admits(&users, None).await);
        for bad in ["Bearer abc", "Basic", "Basic !!!", "Basic YWxpY2U="] {
            let header = HeaderValue::from_static(bad);
            assert!(!gate.admits(&users, Some(&header)).await, "{bad}");
        }
        // Case-insensitive scheme; a password may hold colons.
        let hash = bcrypt::hash("a:b", 4).unwrap();
        let users = Users::new([("u".to_string(), hash)].into())
            .unwrap()
            .unwrap();
        let header = format!("basic {}", STANDARD.encode("u:a:b"));
        assert!(
            gate.admits(&users, Some(&HeaderValue::from_str(&header).unwrap()))
                .await
        );
    }
}
