//! Building a change as git objects: a workflow's blobs and tree, the
//! root tree with its folder replaced, and the commit on top of `main`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::git::Call;
use super::tree::{parse_ls_tree, TreeEntry};
use super::{
    Author, Repo, RepoError, Result, Version, BRANCH, COMMITTER_EMAIL, COMMITTER_NAME,
    MAX_LISTING_OUT, WORKFLOWS_DIR,
};

impl Repo {
    /// Writes the blobs and the folder's tree; returns the tree id.
    pub(super) fn write_folder(&self, name: &str, files: &[(String, Vec<u8>)]) -> Result<String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut index_info = Vec::new();
        for (path, content) in files {
            let oid = self
                .git
                .line(Call::new(["hash-object", "-w", "--no-filters", "--stdin"]).stdin(content))?;
            index_info.extend_from_slice(format!("100644 {oid}\t{path}").as_bytes());
            index_info.push(0);
        }
        // A private index holding only this folder's files: one
        // `write-tree` builds every subfolder's tree at once.
        let index = std::env::temp_dir().join(format!(
            "orch-repo-index-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            self.git
                .ok(Call::new(["update-index", "-z", "--index-info"])
                    .stdin(&index_info)
                    .env("GIT_INDEX_FILE", &index))?;
            self.git
                .line(Call::new(["write-tree"]).env("GIT_INDEX_FILE", &index))
        })();
        let _ = std::fs::remove_file(&index);
        let mut lock = index.into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
        let tree = result?;
        tracing::debug!(workflow = name, tree = %tree, files = files.len(), "folder written");
        Ok(tree)
    }

    /// The root tree of `head` with `workflows/<name>` replaced by
    /// `folder` (or removed when `None`); and whether it existed.
    pub(super) fn replace_folder(
        &self,
        head: Option<&str>,
        name: &str,
        folder: Option<&str>,
    ) -> Result<(String, bool)> {
        let mut root = match head {
            Some(head) => self.ls_tree(&format!("{head}^{{tree}}"))?,
            None => Vec::new(),
        };
        let at = root
            .iter()
            .position(|e| e.name == WORKFLOWS_DIR.as_bytes() && e.kind == "tree");
        let mut folders = match at {
            Some(i) => self.ls_tree(&root[i].oid)?,
            None => Vec::new(),
        };
        let before = folders.len();
        folders.retain(|e| e.name != name.as_bytes());
        let existed = folders.len() != before;
        if let Some(folder) = folder {
            folders.push(TreeEntry {
                mode: "040000".into(),
                kind: "tree".into(),
                oid: folder.to_string(),
                size: None,
                name: name.as_bytes().to_vec(),
            });
        }
        root.retain(|e| e.name != WORKFLOWS_DIR.as_bytes());
        if !folders.is_empty() {
            let oid = self.mktree(&folders)?;
            root.push(TreeEntry {
                mode: "040000".into(),
                kind: "tree".into(),
                oid,
                size: None,
                name: WORKFLOWS_DIR.as_bytes().to_vec(),
            });
        }
        Ok((self.mktree(&root)?, existed))
    }

    fn ls_tree(&self, tree: &str) -> Result<Vec<TreeEntry>> {
        let out = self
            .git
            .ok(Call::new(["ls-tree", "-z", tree]).max_out(MAX_LISTING_OUT))?;
        parse_ls_tree("git ls-tree", &out)
    }

    fn mktree(&self, entries: &[TreeEntry]) -> Result<String> {
        let mut input = Vec::new();
        for e in entries {
            e.mktree_line(&mut input);
        }
        self.git.line(Call::new(["mktree", "-z"]).stdin(&input))
    }

    pub(super) fn tree_of(&self, commit: &str) -> Result<String> {
        self.git.line(Call::new([
            "rev-parse".to_string(),
            "--verify".to_string(),
            format!("{commit}^{{tree}}"),
        ]))
    }

    /// Commits `tree` on top of `head` and moves the branch if it still
    /// points at `head`. `None`: it moved (the commit stays unreachable).
    pub(super) fn commit(
        &self,
        head: Option<&str>,
        tree: &str,
        author: &Author,
        message: &str,
    ) -> Result<Option<Version>> {
        let now = crate::time::unix_millis() / 1000;
        let date = format!("@{now} +0000");
        let mut args = vec!["commit-tree".to_string(), tree.to_string()];
        if let Some(head) = head {
            args.push("-p".into());
            args.push(head.to_string());
        }
        args.push("-F".into());
        args.push("-".into());
        let commit = self.git.line(
            Call::new(args)
                .stdin(message.as_bytes())
                .env("GIT_AUTHOR_NAME", &author.name)
                .env("GIT_AUTHOR_EMAIL", &author.email)
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_NAME", COMMITTER_NAME)
                .env("GIT_COMMITTER_EMAIL", COMMITTER_EMAIL)
                .env("GIT_COMMITTER_DATE", &date),
        )?;
        let out = self.git.run(Call::new([
            "update-ref",
            "-m",
            "orch",
            BRANCH,
            commit.as_str(),
            head.unwrap_or(""),
        ]))?;
        if !out.ok() {
            // Refused because the branch moved: rebuild on the new head.
            // Refused while it still points at `head`: git itself failed
            // (a full disk, a stale ref lock), which retrying would only
            // hide behind a conflict.
            if self.head()?.as_deref() != head {
                tracing::debug!(stderr = %out.stderr, "update-ref refused: the branch moved");
                return Ok(None);
            }
            return Err(RepoError::Git {
                command: "git update-ref".into(),
                code: out.code,
                stderr: out.stderr,
            });
        }
        Ok(Some(Version {
            commit,
            author: author.clone(),
            time: crate::time::format_millis(now * 1000),
            unix_seconds: now as i64,
            message: message.trim().to_string(),
            deleted: false,
        }))
    }
}
