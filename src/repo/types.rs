//! What the repository takes and hands out: authors, versions, pages of
//! history, and workflows' files.

/// Who made a change: a user's name and email (the email may be empty).
/// Neither may hold a newline, a control character, `<` or `>`, nor be
/// longer than [`MAX_AUTHOR_BYTES`](super::MAX_AUTHOR_BYTES).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Author {
    /// The display name.
    pub name: String,
    /// The email address (may be empty).
    pub email: String,
}

impl Author {
    /// An author from a name and an email.
    ///
    /// ```
    /// let ada = orch::repo::Author::new("Ada", "ada@example.com");
    /// assert_eq!(ada.name, "Ada");
    /// ```
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Author {
            name: name.into(),
            email: email.into(),
        }
    }
}

/// One commit in a workflow's history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Version {
    /// The full commit id (40 hex digits).
    pub commit: String,
    /// Who made the change.
    pub author: Author,
    /// When, as RFC 3339 UTC (`2026-11-24T01:31:11.000Z`; git keeps
    /// seconds).
    pub time: String,
    /// When, in seconds since the Unix epoch.
    pub unix_seconds: i64,
    /// The commit message, trimmed.
    pub message: String,
    /// This commit removed the workflow.
    pub deleted: bool,
}

/// What [`Repo::publish`](super::Repo::publish) did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The new commit; or, when nothing changed, the last commit that
    /// changed the workflow (its current version).
    pub version: Version,
    /// A commit was made. `false` when the files were already exactly
    /// these: no empty commit is made.
    pub changed: bool,
}

/// One page of a workflow's history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// The versions, newest first.
    pub versions: Vec<Version>,
    /// When older versions exist: the value to pass as `before` for the
    /// next page (the oldest commit of this one).
    pub next: Option<String>,
}

/// One file of a workflow at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkflowFile {
    /// The path relative to the workflow's folder, `/`-separated.
    pub path: String,
    /// The content.
    pub content: Vec<u8>,
    /// The SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// A workflow's files at one commit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The workflow.
    pub workflow: String,
    /// The full id of the commit read.
    pub commit: String,
    /// The main file's path ([`MAIN_FILES`](super::MAIN_FILES)).
    pub main_file: String,
    /// Every file, sorted by path.
    pub files: Vec<WorkflowFile>,
}

impl Snapshot {
    /// The file at `path`, if the workflow holds it.
    pub fn file(&self, path: &str) -> Option<&WorkflowFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// A workflow at the head of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The workflow's name.
    pub name: String,
    /// Its main file's path ([`MAIN_FILES`](super::MAIN_FILES)).
    pub main_file: String,
    /// The last commit that changed it.
    pub last: Version,
}
