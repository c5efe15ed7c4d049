//! Publisher signatures on plugin artifacts: ed25519 over the artifact's sha-256 digest.
//!
//! A publisher makes a key pair once (`keel key new`), signs each artifact it ships
//! (`keel plugin sign`, which writes `<artifact>.sig` beside it), and gives platform admins
//! its public key, which they trust under a name (`keel key trust`, or the config's
//! `[signatures] trusted-keys`). An install carries the signature in the `keel-signature`
//! header (the `.sig` file's line); bundled plugins carry theirs beside them.
//!
//! Text forms (base64url without padding):
//! - a public key: `ed25519:<32 bytes>`;
//! - a secret key file: `keel-secret-key-v1 ed25519:<32-byte seed>`;
//! - a signature: `keel-signature-v1 ed25519:<public key> <64-byte signature>`, over the
//!   bytes `keel-plugin-artifact-v1\n` followed by the digest as hex. The prefix keeps a
//!   signature of an artifact from meaning anything else the same key might sign.
//!
//! Rules at install ([`Verdict`]): a signature that is malformed or does not verify is
//! refused whatever the policy; a valid one by a trusted key records the key's name as the
//! version's signer; a valid one by a key nobody trusts, or none at all, is refused when the
//! platform requires signatures and installs unsigned otherwise.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use std::fmt;
use std::str::FromStr;

/// The install request's header carrying the artifact's signature (the `.sig` file's line).
pub const SIGNATURE_HEADER: &str = "keel-signature";

const KEY_PREFIX: &str = "ed25519:";
const SECRET_HEADER: &str = "keel-secret-key-v1";
const SIGNATURE_MAGIC: &str = "keel-signature-v1";
const DOMAIN: &[u8] = b"keel-plugin-artifact-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not a public key: {0} (expected `ed25519:` and 32 bytes in base64url)")]
    BadKey(String),
    #[error("not a secret key file: {0}")]
    BadSecret(String),
    #[error("not a signature: {0} (expected `{SIGNATURE_MAGIC} ed25519:<key> <signature>`)")]
    Malformed(String),
    #[error("the signature by {0} does not match this artifact")]
    Mismatch(PublicKey),
}

/// A publisher's public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| SignatureError::BadKey(why.to_owned());
        let encoded = s.trim().strip_prefix(KEY_PREFIX).ok_or_else(|| bad("no `ed25519:` prefix"))?;
        let bytes: [u8; 32] =
            B64.decode(encoded).map_err(|e| bad(&e.to_string()))?.try_into().map_err(|_| bad("not 32 bytes"))?;
        // Weak keys (small order) would let one signature verify for many messages.
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a point on the curve"))?;
        if key.is_weak() {
            return Err(bad("a weak key"));
        }
        Ok(PublicKey(key))
    }
}

/// A publisher's secret key. Its text is written only to the key file.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<SecretKey, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key file's text (one line).
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_HEADER} {KEY_PREFIX}{}\n", B64.encode(self.0.to_bytes()))
    }

    pub fn from_file_text(text: &str) -> Result<SecretKey, SignatureError> {
        let bad = |why: &str| SignatureError::BadSecret(why.to_owned());
        let (header, key) = text.trim().split_once(' ').ok_or_else(|| bad("expected two words"))?;
        if header != SECRET_HEADER {
            return Err(bad(&format!("it does not start with `{SECRET_HEADER}`")));
        }
        let encoded = key.strip_prefix(KEY_PREFIX).ok_or_else(|| bad("no `ed25519:` prefix"))?;
        let seed: [u8; 32] =
            B64.decode(encoded).map_err(|e| bad(&e.to_string()))?.try_into().map_err(|_| bad("not 32 bytes"))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Signs the artifact whose sha-256 digest (hex) is `digest`.
    pub fn sign(&self, digest: &str) -> Signature {
        Signature { key: self.public(), signature: self.0.sign(&message(digest)) }
    }
}

fn message(digest: &str) -> Vec<u8> {
    [DOMAIN, digest.as_bytes()].concat()
}

/// A signature of an artifact, with the key that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    key: PublicKey,
    signature: ed25519_dalek::Signature,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SIGNATURE_MAGIC} {} {}", self.key, B64.encode(self.signature.to_bytes()))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Signature {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| SignatureError::Malformed(why.to_owned());
        let mut words = s.split_ascii_whitespace();
        let (Some(header), Some(key), Some(signature), None) = (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad("expected three words"));
        };
        if header != SIGNATURE_MAGIC {
            return Err(bad(&format!("it does not start with `{SIGNATURE_MAGIC}`")));
        }
        let key: PublicKey = key.parse().map_err(|e: SignatureError| bad(&e.to_string()))?;
        let bytes: [u8; 64] = B64
            .decode(signature)
            .map_err(|e| bad(&e.to_string()))?
            .try_into()
            .map_err(|_| bad("the signature is not 64 bytes"))?;
        Ok(Signature { key, signature: ed25519_dalek::Signature::from_bytes(&bytes) })
    }
}

impl Signature {
    /// The key that made it (whether it verifies or not).
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// Whether it signs the artifact of `digest`; strict verification (no malleable
    /// signatures, no small-order keys).
    pub fn verify(&self, digest: &str) -> Result<PublicKey, SignatureError> {
        self.key
            .0
            .verify_strict(&message(digest), &self.signature)
            .map(|()| self.key)
            .map_err(|_| SignatureError::Mismatch(self.key))
    }
}

/// A key the platform trusts, and where that trust was given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TrustedKey {
    /// The publisher's name for it, recorded as the signer of what it signed.
    pub name: String,
    #[schema(value_type = String, example = "ed25519:3Jm0X...")]
    #[serde(serialize_with = "as_text")]
    pub public_key: PublicKey,
    /// `config` (the server's config file; changed only there) or `admin` (the API).
    pub source: &'static str,
    /// When a platform admin trusted it (none for config keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

fn as_text<S: serde::Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(key)
}

/// What the platform asks of artifacts' signatures (the config's `[signatures]`).
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    /// Every install (uploads and bundled plugins) must be signed by a trusted key.
    pub required: bool,
    /// Keys trusted by the config file (`source: config`).
    pub configured: Vec<TrustedKey>,
}

/// Whether an install may go ahead, and under which signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a trusted key: its name is recorded as the version's signer.
    Signed(String),
    /// Installed without a recorded signer (signatures are not required).
    Unsigned,
}

/// Why an install was refused for its signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Invalid(#[from] SignatureError),
    #[error("this platform requires signed plugins: send the artifact's signature (keel plugin sign) with it")]
    Required,
    #[error("the artifact is signed by {0}, which no platform admin trusts; trust it first (keel key trust)")]
    Untrusted(PublicKey),
}

/// Decides an install of the artifact `digest` with `signature` (as sent), given whether
/// signatures are `required` and the `trusted` keys.
pub fn judge(
    digest: &str,
    signature: Option<&str>,
    required: bool,
    trusted: &[TrustedKey],
) -> Result<Verdict, TrustError> {
    let Some(text) = signature else {
        return if required { Err(TrustError::Required) } else { Ok(Verdict::Unsigned) };
    };
    let key = text.parse::<Signature>()?.verify(digest)?;
    match trusted.iter().find(|t| t.public_key == key) {
        Some(t) => Ok(Verdict::Signed(t.name.clone())),
        None if required => Err(TrustError::Untrusted(key)),
        None => {
            tracing::warn!(%key, "artifact signed by a key nobody trusts; installed as unsigned");
            Ok(Verdict::Unsigned)
        }
    }
}

/// Whether `name` may name a trusted key: 1-64 of a-z, 0-9, '-' and '.', starting with a letter.
pub fn valid_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn trusted(name: &str, key: PublicKey) -> TrustedKey {
        TrustedKey { name: name.into(), public_key: key, source: "admin", added_at: Some(1), added_by: None }
    }

    #[test]
    fn keys_and_signatures_round_trip_through_their_text() {
        let secret = SecretKey::generate().unwrap();
        let again = SecretKey::from_file_text(&secret.to_file_text()).unwrap();
        assert_eq!(again.public(), secret.public());
        let public: PublicKey = secret.public().to_string().parse().unwrap();
        assert_eq!(public, secret.public());
        let signature = secret.sign(DIGEST);
        let parsed: Signature = signature.to_string().parse().unwrap();
        assert_eq!(parsed, signature);
        assert_eq!(parsed.verify(DIGEST), Ok(secret.public()));
    }

    #[test]
    fn a_signature_holds_for_its_artifact_and_key_only() {
        let (publisher, other) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let signature = publisher.sign(DIGEST);
        let changed = DIGEST.replace('9', "8");
        assert_eq!(signature.verify(&changed), Err(SignatureError::Mismatch(publisher.public())));
        // The same signature presented as another key's.
        let forged: Signature = signature
            .to_string()
            .replace(&publisher.public().to_string(), &other.public().to_string())
            .parse()
            .unwrap();
        assert!(forged.verify(DIGEST).is_err());
        // A flipped bit in the signature.
        let mut text = signature.to_string();
        let last = text.pop().unwrap();
        text.push(if last == 'A' { 'B' } else { 'A' });
        assert!(text.parse::<Signature>().map_or(true, |s| s.verify(DIGEST).is_err()));
    }

    #[test]
    fn malformed_text_is_refused_with_a_reason() {
        for bad in ["", "keel-signature-v1", "keel-signature-v1 ed25519:AAAA sig", "other-v1 ed25519:x y", "a b c d"] {
            assert!(matches!(bad.parse::<Signature>(), Err(SignatureError::Malformed(_))), "{bad:?}");
        }
        for bad in ["", "ed25519:", "rsa:AAAA", "ed25519:!!!!", "ed25519:AAAA"] {
            assert!(matches!(bad.parse::<PublicKey>(), Err(SignatureError::BadKey(_))), "{bad:?}");
        }
        // The identity point is a weak (small-order) key.
        let identity =
            format!("ed25519:{}", B64.encode([1u8].iter().chain([0u8; 31].iter()).copied().collect::<Vec<_>>()));
        assert!(identity.parse::<PublicKey>().is_err());
        assert!(SecretKey::from_file_text("keel-secret-key-v1 ed25519:AAAA").is_err());
    }

    #[test]
    fn the_verdict_follows_the_policy_and_the_trusted_keys() {
        let publisher = SecretKey::generate().unwrap();
        let signature = publisher.sign(DIGEST).to_string();
        let keys = [trusted("acme-publisher", publisher.public())];
        for required in [false, true] {
            assert_eq!(judge(DIGEST, Some(&signature), required, &keys), Ok(Verdict::Signed("acme-publisher".into())));
            // A signature that does not verify is refused even when none is required.
            let other = DIGEST.replace('0', "1");
            assert!(matches!(judge(&other, Some(&signature), required, &keys), Err(TrustError::Invalid(_))));
            assert!(matches!(judge(DIGEST, Some("junk"), required, &keys), Err(TrustError::Invalid(_))));
        }
        assert_eq!(judge(DIGEST, None, false, &keys), Ok(Verdict::Unsigned));
        assert_eq!(judge(DIGEST, None, true, &keys), Err(TrustError::Required));
        assert_eq!(judge(DIGEST, Some(&signature), false, &[]), Ok(Verdict::Unsigned));
        assert_eq!(judge(DIGEST, Some(&signature), true, &[]), Err(TrustError::Untrusted(publisher.public())));
    }

    #[test]
    fn key_names_are_slugs() {
        assert!(valid_key_name("acme-publisher.2026"));
        for bad in ["", "Acme", "1st", "a b", "a_b", &"a".repeat(65)] {
            assert!(!valid_key_name(bad), "{bad:?}");
        }
    }
}
