//! Reading from the repository: commits resolved, objects and folders
//! looked up at commits, a workflow's log, and its files at one commit.

use super::git::Call;
use super::tree::parse_ls_tree;
use super::validate::validate_commit;
use super::{
    folder_path, Author, Repo, RepoError, Result, Shown, Snapshot, Version, WorkflowFile,
    MAIN_FILES, MAX_FILES, MAX_FILE_BYTES, MAX_LISTING_OUT, MAX_TOTAL_BYTES,
};
use crate::digest::sha256_hex;

impl Repo {
    /// Resolves a user's commit id to a full id of a commit on `main`.
    pub(super) fn resolve(&self, commit: &str) -> Result<String> {
        validate_commit(commit)?;
        let out = self.git.run(Call::new([
            "rev-parse".to_string(),
            "--verify".to_string(),
            format!("{commit}^{{commit}}"),
        ]))?;
        if !out.ok() {
            if out.stderr.contains("ambiguous") {
                return Err(RepoError::InvalidCommit {
                    commit: commit.to_string(),
                    reason: "this prefix matches more than one object; give more digits".into(),
                });
            }
            return Err(RepoError::CommitNotFound {
                commit: commit.to_string(),
            });
        }
        let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if self.on_main(&full)? {
            Ok(full)
        } else {
            Err(RepoError::CommitNotFound {
                commit: commit.to_string(),
            })
        }
    }

    /// Whether the commit `full` (a full id) is on `main`: the head, or
    /// one of its ancestors. Only commits on `main` were published: a
    /// commit whose branch update lost its race never was, and a writer
    /// other than orch may move the branch.
    pub(super) fn on_main(&self, full: &str) -> Result<bool> {
        let Some(head) = self.head()? else {
            return Ok(false);
        };
        if head == full {
            return Ok(true);
        }
        let out = self.git.run(Call::new([
            "merge-base",
            "--is-ancestor",
            full,
            head.as_str(),
        ]))?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            code => Err(RepoError::Git {
                command: "git merge-base".into(),
                code,
                stderr: out.stderr,
            }),
        }
    }

    /// The object id `spec` (`<commit>:<path>`) names, when it exists.
    pub(super) fn object_at(&self, spec: &str) -> Result<Option<String>> {
        Ok(self
            .objects_at(&[spec.to_string()])?
            .remove(0)
            .map(|(oid, _)| oid))
    }

    /// `git cat-file --batch-check` for each spec: its id and type.
    fn objects_at(&self, specs: &[String]) -> Result<Vec<Option<(String, String)>>> {
        let mut input = String::new();
        for spec in specs {
            input.push_str(spec);
            input.push('\n');
        }
        let out = self.git.ok(Call::new(["cat-file", "--batch-check"])
            .stdin(input.as_bytes())
            .max_out(MAX_LISTING_OUT))?;
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() != specs.len() {
            return Err(RepoError::Unexpected {
                command: "git cat-file".into(),
                detail: format!("{} answers for {} questions", lines.len(), specs.len()),
            });
        }
        Ok(lines
            .iter()
            .map(|line| {
                let mut parts = line.split(' ');
                match (parts.next(), parts.next()) {
                    (Some(oid), Some(kind)) if kind != "missing" && kind != "ambiguous" => {
                        Some((oid.to_string(), kind.to_string()))
                    }
                    _ => None,
                }
            })
            .collect())
    }

    /// The tree of the folder of `name` at each commit, `None` where it
    /// does not exist.
    pub(super) fn folders_at(&self, commits: &[String], name: &str) -> Result<Vec<Option<String>>> {
        let folder = folder_path(name);
        let specs: Vec<String> = commits.iter().map(|c| format!("{c}:{folder}")).collect();
        Ok(self
            .objects_at(&specs)?
            .into_iter()
            .map(|o| o.and_then(|(oid, kind)| (kind == "tree").then_some(oid)))
            .collect())
    }

    /// `git log` of the folder of `name` from `starts`, at most `n`
    /// commits, with whether each removed the workflow.
    pub(super) fn log(&self, starts: &[String], name: &str, n: usize) -> Result<Vec<Version>> {
        let mut args = vec![
            "log".to_string(),
            "-z".to_string(),
            "--no-show-signature".to_string(),
            "--format=%H%x00%an%x00%ae%x00%at%x00%B".to_string(),
            format!("--max-count={n}"),
        ];
        args.extend(starts.iter().cloned());
        args.push("--".into());
        args.push(folder_path(name));
        let out = self.git.ok(Call::new(args).max_out(MAX_LISTING_OUT))?;
        let bad = |detail: &str| RepoError::Unexpected {
            command: "git log".into(),
            detail: detail.to_string(),
        };
        let mut fields = out.split(|&b| b == 0);
        let mut versions = Vec::new();
        while let Some(commit) = fields.next() {
            if commit.is_empty() {
                break;
            }
            let (Some(an), Some(ae), Some(at), Some(body)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("a commit with missing fields"));
            };
            let commit = String::from_utf8_lossy(commit).trim().to_string();
            if !commit.bytes().all(|b| b.is_ascii_hexdigit()) || commit.len() < 40 {
                return Err(bad("a commit id that is not hexadecimal"));
            }
            let unix_seconds: i64 = String::from_utf8_lossy(at)
                .trim()
                .parse()
                .map_err(|_| bad("a time that is not a number"))?;
            versions.push(Version {
                commit,
                author: Author {
                    name: String::from_utf8_lossy(an).into_owned(),
                    email: String::from_utf8_lossy(ae).into_owned(),
                },
                time: crate::time::format_millis(unix_seconds.max(0) as u64 * 1000),
                unix_seconds,
                message: String::from_utf8_lossy(body).trim().to_string(),
                deleted: false,
            });
        }
        if !versions.is_empty() {
            let commits: Vec<String> = versions.iter().map(|v| v.commit.clone()).collect();
            for (v, folder) in versions.iter_mut().zip(self.folders_at(&commits, name)?) {
                v.deleted = folder.is_none();
            }
        }
        Ok(versions)
    }

    /// Reads every file of the folder tree `tree` of `name` at `commit`.
    pub(super) fn read_folder(&self, name: &str, commit: &str, tree: &str) -> Result<Snapshot> {
        let corrupt = |reason: String| RepoError::Corrupt {
            workflow: name.to_string(),
            commit: commit.to_string(),
            reason,
        };
        let out = self
            .git
            .ok(Call::new(["ls-tree", "-r", "-z", "-l", tree]).max_out(MAX_LISTING_OUT))?;
        let entries = parse_ls_tree("git ls-tree", &out)?;
        if entries.len() > MAX_FILES {
            return Err(corrupt(format!("more than {MAX_FILES} files")));
        }
        let mut total = 0u64;
        let mut input = String::new();
        let mut paths = Vec::new();
        for e in &entries {
            let path = String::from_utf8(e.name.clone())
                .map_err(|_| corrupt("a file path that is not UTF-8".into()))?;
            if e.kind != "blob" || !(e.mode == "100644" || e.mode == "100755") {
                return Err(corrupt(format!(
                    "`{}` is a {} (mode {}), not a regular file",
                    Shown(&path),
                    e.kind,
                    e.mode
                )));
            }
            let size = e.size.unwrap_or(0);
            if size > MAX_FILE_BYTES as u64 {
                return Err(corrupt(format!(
                    "`{}` has {size} bytes, more than {MAX_FILE_BYTES}",
                    Shown(&path)
                )));
            }
            total += size;
            input.push_str(&e.oid);
            input.push('\n');
            paths.push(path);
        }
        if total > MAX_TOTAL_BYTES as u64 {
            return Err(corrupt(format!(
                "{total} bytes, more than {MAX_TOTAL_BYTES}"
            )));
        }
        let out = self.git.ok(Call::new(["cat-file", "--batch"])
            .stdin(input.as_bytes())
            .max_out(MAX_TOTAL_BYTES + (MAX_FILES + 1) * 128))?;
        let mut files = Vec::with_capacity(paths.len());
        let mut rest: &[u8] = &out;
        for path in paths {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| corrupt("git cat-file said too little".into()))?;
            let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size: usize = header
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(format!("git cat-file said `{}`", Shown(&header))))?;
            let body = rest
                .get(nl + 1..nl + 1 + size)
                .ok_or_else(|| corrupt("git cat-file said too little".into()))?;
            let content = body.to_vec();
            rest = rest.get(nl + 2 + size..).unwrap_or(&[]);
            files.push(WorkflowFile {
                path,
                sha256: sha256_hex(&content),
                content,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mains: Vec<&str> = files
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| MAIN_FILES.contains(p))
            .collect();
        let [main_file] = mains.as_slice() else {
            return Err(corrupt(format!(
                "{} main files (one of {} expected)",
                mains.len(),
                MAIN_FILES.join(", ")
            )));
        };
        Ok(Snapshot {
            workflow: name.to_string(),
            commit: commit.to_string(),
            main_file: main_file.to_string(),
            files,
        })
    }
}
