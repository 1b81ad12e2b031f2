//! Errors of workflow files: each names the file and, where the format
//! knows it, the line and column of the thing at fault.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

/// Where something is in a workflow file: its path, and its line and
/// column (from 1) when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub file: PathBuf,
    /// Line and column, from 1.
    pub at: Option<(u64, u64)>,
}

impl Place {
    /// The whole file (no line known).
    pub fn file(file: &Path) -> Place {
        Place {
            file: file.to_path_buf(),
            at: None,
        }
    }

    /// Where a spanned value was written.
    pub fn of<T>(file: &Path, value: &Spanned<T>) -> Place {
        let (line, column) = (value.referenced.line(), value.referenced.column());
        Place {
            file: file.to_path_buf(),
            // Line 0: the parser lost the location (inside untagged data).
            at: (line > 0).then_some((line, column)),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.at {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// A workflow file that cannot be used: where, and why. The definition is
/// refused whole.
///
/// ```
/// use orch::file::{FileError, Place};
/// let e = FileError::new(Place { file: "flow.yaml".into(), at: Some((3, 7)) }, "task `b`: after names `x`, which is no task of this workflow");
/// assert_eq!(e.to_string(), "flow.yaml:3:7: task `b`: after names `x`, which is no task of this workflow");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct FileError {
    /// Where.
    pub place: Place,
    /// Why.
    pub message: String,
}

impl FileError {
    /// An error at `place`.
    pub fn new(place: Place, message: impl Into<String>) -> FileError {
        FileError {
            place,
            message: message.into(),
        }
    }
}
