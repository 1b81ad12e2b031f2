//! Entries of `git ls-tree -z` output, parsed, and written back for
//! `git mktree`.

use super::{RepoError, Result};

/// One entry of `git ls-tree -z` output: `<mode> <type> <oid>` and its
/// name.
pub(super) struct TreeEntry {
    pub(super) mode: String,
    pub(super) kind: String,
    pub(super) oid: String,
    /// `ls-tree -l`: the blob's size.
    pub(super) size: Option<u64>,
    pub(super) name: Vec<u8>,
}

impl TreeEntry {
    pub(super) fn mktree_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{} {} {}\t", self.mode, self.kind, self.oid).as_bytes());
        out.extend_from_slice(&self.name);
        out.push(0);
    }
}

pub(super) fn parse_ls_tree(command: &str, out: &[u8]) -> Result<Vec<TreeEntry>> {
    let bad = |detail: &str| RepoError::Unexpected {
        command: command.to_string(),
        detail: detail.to_string(),
    };
    let mut entries = Vec::new();
    for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let tab = record
            .iter()
            .position(|&b| b == b'\t')
            .ok_or_else(|| bad("an entry without a tab"))?;
        let meta = std::str::from_utf8(&record[..tab]).map_err(|_| bad("non-UTF-8 entry"))?;
        let mut parts = meta.split_ascii_whitespace();
        let (Some(mode), Some(kind), Some(oid)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("an entry with fewer than three fields"));
        };
        let size = parts.next().and_then(|s| s.parse().ok());
        entries.push(TreeEntry {
            mode: mode.to_string(),
            kind: kind.to_string(),
            oid: oid.to_string(),
            size,
            name: record[tab + 1..].to_vec(),
        });
    }
    Ok(entries)
}
