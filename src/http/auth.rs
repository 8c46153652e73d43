//! HTTP basic authentication against the bcrypt hashes of the web
//! configuration, as exporter-toolkit does it: every user is checked with
//! bcrypt (an unknown user against a dummy hash, so timing does not tell
//! which names exist), and a successful check is cached so that a scraper does
//! not pay bcrypt's cost on every request.
//!
//! Owns the `Authorization` header parsing, the bcrypt calls and the cache.
//! Never logs or stores a password: the cache keeps keyed hashes only.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use base64::Engine as _;
use parking_lot::Mutex;

use crate::model::Secret;

/// A bcrypt hash of a random password, checked for unknown user names.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Entries kept in the success cache before it starts over.
const CACHE_LIMIT: usize = 1024;

/// Checks credentials against a user table.
#[derive(Debug, Default)]
pub(crate) struct BasicAuth {
    hasher: std::collections::hash_map::RandomState,
    verified: Mutex<HashSet<(u64, u64)>>,
}

/// What a request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The user table is empty: no authentication required.
    Open,
    /// Good credentials.
    Allowed,
    /// Missing, malformed or wrong credentials.
    Denied,
    /// Too many password checks running and waiting: not checked.
    Busy,
}

impl BasicAuth {
    /// Checks an `Authorization` header value against `users`. Runs bcrypt on
    /// a cache miss: call it off the async workers.
    pub(crate) fn check(
        &self,
        users: &BTreeMap<String, Secret>,
        authorization: Option<&str>,
    ) -> Verdict {
        if users.is_empty() {
            return Verdict::Open;
        }
        let Some((user, password)) = authorization.and_then(decode_basic) else {
            return Verdict::Denied;
        };
        let hash = users.get(&user);
        let hash_text = hash.map_or(DUMMY_HASH, |h| h.expose());
        let key = self.cache_key(&user, hash_text, &password);
        if hash.is_some() && self.verified.lock().contains(&key) {
            return Verdict::Allowed;
        }
        let good = bcrypt::verify(&password, hash_text).unwrap_or(false);
        if good && hash.is_some() {
            let mut verified = self.verified.lock();
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(key);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// The verdict on these credentials when it needs no bcrypt: allowed
    /// from the cache, denied when missing or malformed; `None` when only
    /// bcrypt can tell.
    pub(crate) fn precheck(
        &self,
        users: &BTreeMap<String, Secret>,
        authorization: Option<&str>,
    ) -> Option<Verdict> {
        let Some((user, password)) = authorization.and_then(decode_basic) else {
            return Some(Verdict::Denied);
        };
        let cached = users.get(&user).is_some_and(|hash| {
            let key = self.cache_key(&user, hash.expose(), &password);
            self.verified.lock().contains(&key)
        });
        cached.then_some(Verdict::Allowed)
    }

    /// Two independent keyed hashes of user, stored hash and password.
    fn cache_key(&self, user: &str, hash: &str, password: &str) -> (u64, u64) {
        let digest = |salt: u8| {
            let mut h = self.hasher.build_hasher();
            h.write_u8(salt);
            for part in [user, hash, password] {
                h.write(part.as_bytes());
                h.write_u8(0xff);
            }
            h.finish()
        };
        (digest(1), digest(2))
    }
}

/// User and password of a `Basic` authorization header.
fn decode_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeMap<String, Secret> {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BTreeMap::from([("prometheus".to_string(), Secret::new(hash))])
    }

    fn header(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn no_users_means_open() {
        let auth = BasicAuth::default();
        assert_eq!(auth.check(&BTreeMap::new(), None), Verdict::Open);
    }

    #[test]
    fn good_password_passes_and_is_cached() {
        let auth = BasicAuth::default();
        let users = users();
        let good = header("prometheus", "s3cret");
        assert_eq!(auth.precheck(&users, Some(&good)), None);
        assert_eq!(auth.check(&users, Some(&good)), Verdict::Allowed);
        assert_eq!(auth.precheck(&users, Some(&good)), Some(Verdict::Allowed));
        assert_eq!(auth.precheck(&users, None), Some(Verdict::Denied));
        assert_eq!(
            auth.precheck(&users, Some("Basic !!")),
            Some(Verdict::Denied)
        );
        assert_eq!(auth.check(&users, Some(&good)), Verdict::Allowed);
    }

    #[test]
    fn wrong_password_unknown_user_and_junk_are_denied() {
        let auth = BasicAuth::default();
        let users = users();
        for bad in [
            header("prometheus", "wrong"),
            header("nobody", "s3cret"),
            "Basic !!!".to_string(),
            "Bearer abc".to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no-colon")
            ),
        ] {
            assert_eq!(auth.check(&users, Some(&bad)), Verdict::Denied, "{bad}");
        }
        assert_eq!(auth.check(&users, None), Verdict::Denied);
    }

    #[test]
    fn dummy_hash_is_a_valid_bcrypt_hash() {
        assert!(crate::config::web::bcrypt_cost(DUMMY_HASH).is_some());
        assert!(!bcrypt::verify("", DUMMY_HASH).unwrap());
    }
}
