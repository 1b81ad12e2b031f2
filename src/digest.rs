//! SHA-256 in hex: the name of a file's content for published workflows,
//! shipped files and workflow binaries (feature `server` or `client`).

use sha2::{Digest, Sha256};

/// SHA-256 of `data`, as 64 lowercase hex digits.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(data) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_empty_string() {
        assert_eq!(
            super::sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
