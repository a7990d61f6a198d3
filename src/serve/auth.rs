//! HTTP basic authentication (RFC 7617) against bcrypt hashes, as the
//! exporter-toolkit's `basic_auth_users`.
//!
//! A check never reveals which users exist: an unknown user is verified
//! against a dummy hash of the same cost, so both cost one bcrypt run.
//! Credentials that verified once are remembered as an HMAC tag under a
//! key made at start (never the password itself), compared in constant
//! time, so the scraper's repeated requests cost no bcrypt run and cannot
//! be queued behind a flood of wrong passwords. One bcrypt verification
//! runs at a time, off the async workers.

use base64::Engine;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Verified credentials remembered (more are forgotten all at once).
const REMEMBERED: usize = 64;

pub struct Users {
    hashes: BTreeMap<String, String>,
    dummy: String,
    key: ring::hmac::Key,
    verified: Mutex<Vec<ring::hmac::Tag>>,
    checker: tokio::sync::Semaphore,
}

/// The user and password of an `Authorization: Basic ...` header value,
/// or `None` when it is not one.
pub fn parse_basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii_start())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (user, pass) = decoded.split_at(colon);
    Some((user.to_vec(), pass[1..].to_vec()))
}

impl Users {
    /// `hashes`: user -> bcrypt hash, already checked by the config parser.
    pub fn new(hashes: BTreeMap<String, String>) -> anyhow::Result<Users> {
        let cost = hashes
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no random numbers for the credential cache"))?;
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut seed)
            .map_err(|_| anyhow::anyhow!("no random numbers for the dummy hash"))?;
        let dummy = bcrypt::hash(seed, cost)?;
        Ok(Users {
            hashes,
            dummy,
            key,
            verified: Mutex::new(Vec::new()),
            checker: tokio::sync::Semaphore::new(1),
        })
    }

    fn tag(&self, user: &[u8], pass: &[u8]) -> ring::hmac::Tag {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user);
        ctx.update(pass);
        ctx.sign()
    }

    fn remembered(&self, tag: &ring::hmac::Tag) -> bool {
        let known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let mut hit = subtle::Choice::from(0);
        for t in known.iter() {
            hit |= t.as_ref().ct_eq(tag.as_ref());
        }
        hit.into()
    }

    /// Whether the `Authorization` header value grants access.
    pub async fn check(self: &Arc<Self>, header: Option<&[u8]>) -> bool {
        let Some((user, pass)) = header.and_then(parse_basic) else {
            return false;
        };
        let tag = self.tag(&user, &pass);
        if self.remembered(&tag) {
            return true;
        }
        let Ok(_permit) = self.checker.acquire().await else {
            return false;
        };
        let users = Arc::clone(self);
        let verdict = tokio::task::spawn_blocking(move || {
            let user = String::from_utf8(user).ok();
            let hash = user.as_ref().and_then(|u| users.hashes.get(u));
            let known = hash.is_some();
            let hash = hash.unwrap_or(&users.dummy);
            let ok = bcrypt::verify(&pass, hash).unwrap_or(false);
            known && ok
        })
        .await
        .unwrap_or(false);
        if verdict {
            let mut known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() >= REMEMBERED {
                known.clear();
            }
            known.push(tag);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pass: &str) -> Vec<u8> {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Basic {enc}").into_bytes()
    }

    #[test]
    fn parse_basic_reads_rfc7617_credentials() {
        assert_eq!(
            parse_basic(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            Some((b"aladdin".to_vec(), b"opensesame".to_vec()))
        );
        assert_eq!(
            parse_basic(&header("u", "p:with:colons")),
            Some((b"u".to_vec(), b"p:with:colons".to_vec()))
        );
        assert_eq!(
            parse_basic(b"bAsIc  dTo="),
            Some((b"u".to_vec(), b"".to_vec()))
        );
        for bad in [
            &b""[..],
            b"Basic",
            b"Basic ",
            b"Bearer dTpw",
            b"Basic !!!!",
            b"Basic dXNlcg==",
            b"Basicx dTpw",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn right_wrong_and_unknown_credentials() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Arc::new(Users::new(BTreeMap::from([("alice".to_string(), hash)])).unwrap());
        rt.block_on(async {
            assert!(users.check(Some(&header("alice", "s3cret"))).await);
            // Remembered: the second check needs no bcrypt run.
            assert!(users.check(Some(&header("alice", "s3cret"))).await);
            assert!(!users.check(Some(&header("alice", "wrong"))).await);
            assert!(!users.check(Some(&header("alice", "s3cret2"))).await);
            assert!(!users.check(Some(&header("bob", "s3cret"))).await);
            assert!(!users.check(Some(&header("", ""))).await);
            assert!(!users.check(None).await);
            assert!(!users.check(Some(b"Basic \xff")).await);
        });
        // The dummy hash has the cost of the real ones.
        let cost = users.dummy.parse::<bcrypt::HashParts>().unwrap().get_cost();
        assert_eq!(cost, 4);
    }
}
