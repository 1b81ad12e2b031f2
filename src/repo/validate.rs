//! The rules for everything a user hands the repository: names, paths,
//! file sets, messages, authors, commit ids.

use std::collections::BTreeSet;

use super::{
    Author, RepoError, MAIN_FILES, MAX_AUTHOR_BYTES, MAX_FILES, MAX_FILE_BYTES, MAX_MESSAGE_BYTES,
    MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_TOTAL_BYTES,
};

/// Checks a workflow name: 1 to [`MAX_NAME_BYTES`] characters from
/// `A-Z a-z 0-9 _ . -`, starting with a letter or digit, without `..`.
///
/// ```
/// use orch::repo::validate_name;
/// assert!(validate_name("nightly-etl.v2").is_ok());
/// for bad in ["", "-x", ".hidden", "a..b", "a/b", "a b", "naïve"] {
///     assert!(validate_name(bad).is_err(), "{bad}");
/// }
/// ```
pub fn validate_name(name: &str) -> Result<(), RepoError> {
    let bad = |reason: &str| {
        Err(RepoError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(&format!("it is longer than {MAX_NAME_BYTES} bytes"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "`{}` is not allowed (only letters, digits, `_`, `.` and `-`)",
            c.escape_default()
        ));
    }
    if name.contains("..") {
        return bad("it contains `..`");
    }
    Ok(())
}

/// Checks one file path inside a workflow folder.
pub(crate) fn validate_path(workflow: &str, path: &str) -> Result<(), RepoError> {
    let bad = |reason: &str| {
        Err(RepoError::InvalidPath {
            workflow: workflow.to_string(),
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad(&format!("it is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if path.contains('\\') {
        return bad("it contains a backslash (use `/`)");
    }
    if path.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if path.starts_with('/') {
        return bad("it is absolute (it must be relative to the workflow's folder)");
    }
    for part in path.split('/') {
        if part.is_empty() {
            return bad("it has an empty component (`//` or a trailing `/`)");
        }
        if part == "." || part == ".." {
            return bad(&format!("it has a `{part}` component"));
        }
        if part.eq_ignore_ascii_case(".git") {
            return bad("it has a `.git` component");
        }
        if part.starts_with('-') {
            return bad("a component starts with `-`");
        }
    }
    Ok(())
}

/// Checks a whole file set: each path, duplicates, a path that is both a
/// file and a folder, counts, sizes, exactly one main file. Returns the
/// main file's path.
pub(crate) fn validate_files(
    workflow: &str,
    files: &[(String, Vec<u8>)],
) -> Result<String, RepoError> {
    let bad = |reason: String| {
        Err(RepoError::InvalidFiles {
            workflow: workflow.to_string(),
            reason,
        })
    };
    if files.len() > MAX_FILES {
        return bad(format!(
            "{} files is more than the limit of {MAX_FILES}",
            files.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut lower = BTreeSet::new();
    let mut total = 0usize;
    for (path, content) in files {
        validate_path(workflow, path)?;
        if content.len() > MAX_FILE_BYTES {
            return bad(format!(
                "file `{}` has {} bytes, more than the limit of {MAX_FILE_BYTES}",
                super::Shown(path),
                content.len()
            ));
        }
        total += content.len();
        if !seen.insert(path.as_str()) {
            return bad(format!("file `{}` is given twice", super::Shown(path)));
        }
        // Two paths that differ only in case collide when a run checks
        // the workflow out on a case-insensitive file system.
        if !lower.insert(path.to_lowercase()) {
            return bad(format!(
                "file `{}` differs from another file only in case",
                super::Shown(path)
            ));
        }
    }
    if total > MAX_TOTAL_BYTES {
        return bad(format!(
            "the files hold {total} bytes, more than the limit of {MAX_TOTAL_BYTES}"
        ));
    }
    // A path that is also a folder of another path (`a` and `a/b`).
    for path in &seen {
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                if seen.contains(prefix.as_str()) {
                    return bad(format!(
                        "`{}` is both a file and the folder of `{}`",
                        super::Shown(&prefix),
                        super::Shown(path)
                    ));
                }
                prefix.push('/');
            }
            prefix.push_str(part);
        }
    }
    let mains: Vec<&str> = seen
        .iter()
        .copied()
        .filter(|p| MAIN_FILES.contains(p))
        .collect();
    match mains.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bad(format!(
            "no main file (one of {} at the top of the folder)",
            MAIN_FILES.join(", ")
        )),
        many => bad(format!(
            "more than one main file ({}); keep exactly one",
            many.join(", ")
        )),
    }
}

/// Checks a commit message and returns it as stored: trimmed, with one
/// final newline.
pub(crate) fn validate_message(workflow: &str, message: &str) -> Result<String, RepoError> {
    let bad = |reason: String| {
        Err(RepoError::InvalidMessage {
            workflow: workflow.to_string(),
            reason,
        })
    };
    if message.contains('\0') {
        return bad("it contains a NUL byte".into());
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return bad(format!("it is longer than {MAX_MESSAGE_BYTES} bytes"));
    }
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return bad("it is empty".into());
    }
    Ok(format!("{trimmed}\n"))
}

/// Checks an author and returns it with surrounding whitespace trimmed.
pub(crate) fn validate_author(author: &Author) -> Result<Author, RepoError> {
    fn field(field: &'static str, value: &str, may_be_empty: bool) -> Result<String, RepoError> {
        let bad = |reason: String| {
            Err(RepoError::InvalidAuthor {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if value.len() > MAX_AUTHOR_BYTES {
            return bad(format!("it is longer than {MAX_AUTHOR_BYTES} bytes"));
        }
        if let Some(c) = value
            .chars()
            .find(|c| c.is_control() || matches!(c, '<' | '>'))
        {
            return bad(format!("`{}` is not allowed", c.escape_default()));
        }
        let trimmed = value.trim();
        if trimmed.is_empty() && !may_be_empty {
            return bad("it is empty".into());
        }
        Ok(trimmed.to_string())
    }
    Ok(Author {
        name: field("name", &author.name, false)?,
        email: field("email", &author.email, true)?,
    })
}

/// Checks a commit id as given by a user: 4 to 40 hexadecimal digits.
pub(crate) fn validate_commit(commit: &str) -> Result<(), RepoError> {
    let bad = |reason: &str| {
        Err(RepoError::InvalidCommit {
            commit: commit.to_string(),
            reason: reason.to_string(),
        })
    };
    if !(4..=40).contains(&commit.len()) {
        return bad("it must be 4 to 40 hexadecimal digits");
    }
    if !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("it must be hexadecimal digits only");
    }
    Ok(())
}
