//! Opaque keyset-pagination cursors.
//!
//! A cursor is URL-safe base64 (no padding) of `v1:<filters>:<last path>`,
//! where `<filters>` is the first 16 hex digits of SHA-256 over the tenant,
//! prefix and recursion of the listing. A cursor presented with other filters,
//! or one that does not decode, is rejected with [`Error::InvalidCursor`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The hash of a listing's filters that a cursor carries.
pub fn filter_hash(tenant: &str, prefix: &str, recursive: bool) -> String {
    let mut h = Sha256::new();
    for part in [tenant, prefix] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update([u8::from(recursive)]);
    hex::encode(&h.finalize()[..8])
}

/// A cursor after `last_path` for the listing with `filters`.
pub fn encode(filters: &str, last_path: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{filters}:{last_path}"))
}

/// Returns the last path of the previous page, or [`Error::InvalidCursor`].
pub fn decode(cursor: &str, filters: &str, prefix: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidCursor {
        reason: reason.to_string(),
    };
    if cursor.len() > 8 * 1024 {
        return Err(bad("too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad("not URL-safe base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let rest = text
        .strip_prefix("v1:")
        .ok_or_else(|| bad("unknown format"))?;
    let (hash, last) = rest.split_once(':').ok_or_else(|| bad("unknown format"))?;
    if hash != filters {
        return Err(bad(
            "filters mismatch: the cursor belongs to a listing with another prefix, recursion or tenant",
        ));
    }
    if !last.starts_with(prefix) {
        return Err(bad("its position lies outside the listed prefix"));
    }
    Ok(last.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let f = filter_hash("default", "/a/", true);
        let c = encode(&f, "/a/x:y");
        assert_eq!(decode(&c, &f, "/a/").unwrap(), "/a/x:y");
        let other = filter_hash("default", "/a/", false);
        assert!(
            decode(&c, &other, "/a/")
                .unwrap_err()
                .to_string()
                .contains("filters mismatch")
        );
        assert!(decode("%%%", &f, "/a/").is_err());
        assert!(decode("", &f, "/a/").is_err());
        assert_ne!(filter_hash("t", "/a", true), filter_hash("t/", "a", true));
    }
}
