//! Validation of everything a caller passes in, before any database access.

use crate::error::{Error, Result};

/// The longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest accepted tenant id, metadata key, backend name or etag, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks that `path` names a file: non-empty, absolute (`/` first), at most
/// [`MAX_PATH_BYTES`] bytes, no NUL, and no empty, `.` or `..` segment (so no
/// `//` and no trailing `/`).
pub fn validate_path(path: &str) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidPath {
            path: crate::error::shorten(path),
            reason,
        })
    };
    if path.is_empty() {
        return fail("must not be empty");
    }
    if !path.starts_with('/') {
        return fail("must start with '/'");
    }
    if path.len() > MAX_PATH_BYTES {
        return fail("must be at most 4096 bytes");
    }
    if path.contains('\0') {
        return fail("must not contain NUL");
    }
    if path == "/" {
        return fail("must name a file below the root, not the root itself");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return fail("must not contain an empty segment ('//' or a trailing '/')"),
            "." | ".." => return fail("must not contain '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a prefix for listing: any string that could start a path.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.contains('\0') {
        return Err(Error::invalid("prefix", prefix, "must not contain NUL"));
    }
    if prefix.len() > MAX_PATH_BYTES {
        return Err(Error::invalid(
            "prefix",
            prefix,
            "must be at most 4096 bytes",
        ));
    }
    if !prefix.is_empty() && !prefix.starts_with('/') {
        return Err(Error::invalid(
            "prefix",
            prefix,
            "must be empty or start with '/'",
        ));
    }
    Ok(())
}

/// Checks a short name (tenant, metadata key, backend): non-empty, at most
/// [`MAX_NAME_BYTES`] bytes, no NUL.
pub fn validate_name(name: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(name, value, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(name, value, "must be at most 255 bytes"));
    }
    if value.contains('\0') {
        return Err(Error::invalid(name, value, "must not contain NUL"));
    }
    Ok(())
}

/// Checks a free text field that must be present (physical path): non-empty, no NUL.
pub fn validate_text(name: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(name, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            name,
            value,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(name, value, "must not contain NUL"));
    }
    Ok(())
}

/// The smallest string greater than every string that starts with `prefix`
/// (in byte order), or `None` when no such bound exists (empty prefix, or one
/// made only of U+10FFFF). UTF-8 byte order equals code point order, so
/// incrementing the last code point that can be incremented gives the bound.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            0x10FFFF => None,
            c => char::from_u32(c + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "/a",
            "/a/b.txt",
            "/with space/ünï/日本",
            "/100%_done",
            "/a.b/..c/...",
            "/-",
        ] {
            validate_path(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        validate_path(&format!("/{}", "x".repeat(MAX_PATH_BYTES - 1))).unwrap();
    }

    #[test]
    fn rejects_bad_paths_with_reason() {
        let cases = [
            ("", "empty"),
            ("a/b", "start with '/'"),
            ("/", "root"),
            ("/a//b", "empty segment"),
            ("/a/", "empty segment"),
            ("/a/./b", "'.' or '..'"),
            ("/a/..", "'.' or '..'"),
            ("/a\0b", "NUL"),
        ];
        for (path, needle) in cases {
            let err = validate_path(path).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{path:?}: {msg}");
            assert!(matches!(err, Error::InvalidPath { .. }));
        }
        let long = format!("/{}", "x".repeat(MAX_PATH_BYTES));
        assert!(
            validate_path(&long)
                .unwrap_err()
                .to_string()
                .contains("4096")
        );
    }

    #[test]
    fn upper_bound_brackets_exactly_the_prefixed_strings() {
        assert_eq!(prefix_upper_bound("/a").as_deref(), Some("/b"));
        assert_eq!(prefix_upper_bound("/dir/").as_deref(), Some("/dir0"));
        assert_eq!(
            prefix_upper_bound("/\u{D7FF}").as_deref(),
            Some("/\u{E000}")
        );
        assert_eq!(prefix_upper_bound("/a\u{10FFFF}").as_deref(), Some("/b"));
        assert_eq!(prefix_upper_bound(""), None);
        let prefix = "/d\u{10FFFF}";
        let upper = prefix_upper_bound(prefix).unwrap();
        for s in ["/d\u{10FFFF}", "/d\u{10FFFF}\u{10FFFF}x", "/d\u{10FFFF}/z"] {
            assert!(s >= prefix && s < upper.as_str(), "{s:?}");
        }
        for s in ["/e", "/d", "/dz"] {
            assert!(!(s >= prefix && s < upper.as_str()), "{s:?}");
        }
    }
}
