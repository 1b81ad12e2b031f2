//! Container tasks: an image and what runs in it, as plain serde data.
//! How a container is started, named, stopped and found again is the
//! executor's (`crate::exec::container`); this module holds the
//! description and the checks every description passes before it joins a
//! graph (a task may add container nodes at run time, so the bounds are
//! checked on every batch, not only in files).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The longest image reference, in bytes.
pub const MAX_IMAGE_BYTES: usize = 512;
/// The most environment variables a container task may set.
pub const MAX_ENV_VARS: usize = 256;
/// The longest environment variable value, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// The most mounts a container task may declare.
pub const MAX_MOUNTS: usize = 64;
/// The longest path (a mount's source or target, a working directory),
/// in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The smallest memory limit both Podman and Docker accept (6 MiB).
pub const MIN_MEMORY_BYTES: u64 = 6 << 20;

/// A container a task runs in: its image, what runs in it (a command, a
/// Python script or a Python function; none: the image's own command),
/// its environment, mounts, working directory, limits and network.
///
/// The task protocol runs over the container's stdio unchanged. A Python
/// script or function gets orch's helper package mounted read-only at
/// `/orch/helper` and the workflow's folder read-only at
/// `/orch/workflow`, both on `PYTHONPATH`.
///
/// ```
/// use orch::model::{Container, Mount};
/// let c = Container::new("localhost/orch-busybox")
///     .command(["sh", "-c", "echo hi"])
///     .env("LEVEL", "3")
///     .mount(Mount::bind("/srv/data", "/data").read_only())
///     .memory(256 << 20);
/// assert!(c.check().is_ok());
/// assert!(!c.network, "no network unless asked for");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Container {
    /// The image, as the engine names it (`localhost/orch-python`,
    /// `python:3.12-slim`, `registry/app@sha256:…`).
    pub image: String,
    /// Program and arguments run in the container (empty: the image's
    /// own command, unless `python` or `python_fn` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A Python script, relative to the workflow's folder (mounted at
    /// `/orch/workflow`), run with the image's `python3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// A Python function, `module:function`, importable from the
    /// workflow's folder or the image: called with the inputs as keyword
    /// arguments by orch's helper, its return value the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_fn: Option<String>,
    /// Environment variables of the container (names made of letters,
    /// digits and `_`; `ORCH_*` is orch's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Host folders or files bound into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// The working directory inside the container (absolute; default:
    /// the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Cores the container may use (`--cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory the container may use, in bytes (`--memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Whether the container has a network (default: no network, only
    /// the loopback interface).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
    /// When the engine pulls the image (default: when it is missing).
    #[serde(default, skip_serializing_if = "Pull::is_default")]
    pub pull: Pull,
}

/// When the engine pulls a container's image from its registry.
///
/// ```
/// use orch::model::Pull;
/// assert_eq!(Pull::default(), Pull::Missing);
/// assert_eq!(Pull::Never.as_str(), "never");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Pull {
    /// Pull when the host does not have it (the engines' default).
    #[default]
    Missing,
    /// Never pull: a missing image fails the attempt at once (a host
    /// without a registry, images built locally).
    Never,
    /// Pull before every attempt.
    Always,
}

impl Pull {
    /// The engines' name for it (`--pull=…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Pull::Missing => "missing",
            Pull::Never => "never",
            Pull::Always => "always",
        }
    }

    fn is_default(&self) -> bool {
        *self == Pull::Missing
    }
}

/// A host path bound into a container.
///
/// ```
/// let m = orch::model::Mount::bind("/srv/in", "/in").read_only();
/// assert!(m.read_only);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Mount {
    /// The host path (absolute).
    pub source: String,
    /// Where it appears in the container (absolute).
    pub target: String,
    /// Whether the container may only read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl Mount {
    /// Binds the host path `source` at `target` in the container,
    /// writable.
    pub fn bind(source: impl Into<String>, target: impl Into<String>) -> Mount {
        Mount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    /// The same mount, read-only.
    pub fn read_only(mut self) -> Mount {
        self.read_only = true;
        self
    }
}

/// Why a container description is refused: each names the field and the
/// value at fault.
///
/// ```
/// use orch::model::{Container, ContainerError, Mount};
/// let bad = Container::new("img").mount(Mount::bind("data", "/data"));
/// let err = bad.check().unwrap_err();
/// assert!(matches!(err, ContainerError::Mount { .. }));
/// assert_eq!(err.to_string(), "mount `data` -> `/data`: the source must be an absolute host path");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The image reference is empty, too long or has characters no
    /// engine accepts.
    #[error("image `{image}`: {why}")]
    Image {
        /// The image as given (shortened when very long).
        image: String,
        /// What is wrong with it.
        why: String,
    },
    /// An environment variable's name or value.
    #[error("env `{name}`: {why}")]
    Env {
        /// The variable's name (shortened when very long).
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A mount's source or target.
    #[error("mount `{host}` -> `{target}`: {why}")]
    Mount {
        /// The host path (shortened when very long).
        host: String,
        /// The path in the container (shortened when very long).
        target: String,
        /// What is wrong with it.
        why: String,
    },
    /// Another field (`workdir`, `cpus`, `memory`, `command`, `python`,
    /// `python_fn`).
    #[error("{field}: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl Container {
    /// A container of `image` running the image's own command, without
    /// network.
    pub fn new(image: impl Into<String>) -> Container {
        Container {
            image: image.into(),
            ..Container::default()
        }
    }

    /// Runs `argv` in the container.
    pub fn command<I, S>(mut self, argv: I) -> Container
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Runs the Python script `script` (relative to the workflow's
    /// folder) with the image's `python3`.
    pub fn python(mut self, script: impl Into<String>) -> Container {
        self.python = Some(script.into());
        self
    }

    /// Calls the Python function `spec` (`module:function`) with the
    /// inputs as keyword arguments.
    ///
    /// ```
    /// let c = orch::model::Container::new("localhost/orch-python").python_fn("stats:mean");
    /// assert_eq!(c.python_fn.as_deref(), Some("stats:mean"));
    /// ```
    pub fn python_fn(mut self, spec: impl Into<String>) -> Container {
        self.python_fn = Some(spec.into());
        self
    }

    /// Sets the environment variable `name` in the container.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Container {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, mount: Mount) -> Container {
        self.mounts.push(mount);
        self
    }

    /// Sets the working directory inside the container.
    pub fn workdir(mut self, dir: impl Into<String>) -> Container {
        self.workdir = Some(dir.into());
        self
    }

    /// Limits the cores the container may use.
    pub fn cpus(mut self, cores: f64) -> Container {
        self.cpus = Some(cores);
        self
    }

    /// Limits the memory the container may use, in bytes.
    pub fn memory(mut self, bytes: u64) -> Container {
        self.memory = Some(bytes);
        self
    }

    /// Gives the container the engine's default network (off by default).
    pub fn network(mut self, on: bool) -> Container {
        self.network = on;
        self
    }

    /// Sets when the engine pulls the image.
    pub fn pull(mut self, pull: Pull) -> Container {
        self.pull = pull;
        self
    }

    /// True when a Python script or function runs in the container (it
    /// gets the helper and the workflow's folder mounted).
    pub fn runs_python(&self) -> bool {
        self.python.is_some() || self.python_fn.is_some()
    }

    /// Checks every field against the bounds and the syntax the engines
    /// accept, naming the one at fault. Nothing here touches the host:
    /// whether a mount's source exists is checked when an attempt starts.
    pub fn check(&self) -> Result<(), ContainerError> {
        check_image(&self.image)?;
        let field = |field: &'static str, why: String| ContainerError::Field { field, why };
        let runs = [
            !self.command.is_empty(),
            self.python.is_some(),
            self.python_fn.is_some(),
        ];
        if runs.iter().filter(|&&on| on).count() > 1 {
            return Err(field(
                "command",
                "give at most one of command, python and python_fn".into(),
            ));
        }
        if self.command.first().is_some_and(|p| p.is_empty()) {
            return Err(field("command", "the program is empty".into()));
        }
        if let Some(a) = self.command.iter().find(|a| a.contains('\0')) {
            return Err(field(
                "command",
                format!("the argument {:?} holds a NUL byte", short(a)),
            ));
        }
        if let Some(script) = &self.python {
            let p = Path::new(script);
            if script.is_empty()
                || p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                || has_control(script)
            {
                return Err(field(
                    "python",
                    format!(
                        "`{}` must be a path relative to the workflow's folder, without `..`",
                        short(script)
                    ),
                ));
            }
        }
        if let Some(spec) = &self.python_fn {
            let ok = spec.rsplit_once(':').is_some_and(|(m, f)| {
                !m.is_empty()
                    && !f.is_empty()
                    && spec
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':'))
            });
            if !ok {
                return Err(field(
                    "python_fn",
                    format!("`{}` must look like `module:function`", short(spec)),
                ));
            }
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(field(
                "env",
                format!(
                    "{} variables, more than the limit of {MAX_ENV_VARS}",
                    self.env.len()
                ),
            ));
        }
        for (name, value) in &self.env {
            check_env(name, value)?;
        }
        if self.mounts.len() > MAX_MOUNTS {
            return Err(field(
                "mounts",
                format!(
                    "{} mounts, more than the limit of {MAX_MOUNTS}",
                    self.mounts.len()
                ),
            ));
        }
        for m in &self.mounts {
            check_mount(m, self.runs_python())?;
        }
        if let Some(dir) = &self.workdir {
            check_path(dir).map_err(|why| field("workdir", format!("`{}`: {why}", short(dir))))?;
        }
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0 && c <= 1024.0) {
                return Err(field(
                    "cpus",
                    format!("{c} is not a number of cores above 0 and at most 1024"),
                ));
            }
        }
        if let Some(m) = self.memory {
            if m < MIN_MEMORY_BYTES {
                return Err(field(
                    "memory",
                    format!(
                        "{m} bytes is below the engines' minimum of {MIN_MEMORY_BYTES} (6 MiB)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl From<&str> for Container {
    fn from(image: &str) -> Container {
        Container::new(image)
    }
}

impl From<String> for Container {
    fn from(image: String) -> Container {
        Container::new(image)
    }
}

/// At most 200 bytes of `s` (on a character boundary), for messages.
fn short(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// An image reference: `[registry/]name[:tag][@digest]`, letters, digits
/// and `._-/:@`, starting with a letter or digit (never an option).
fn check_image(image: &str) -> Result<(), ContainerError> {
    let fail = |why: String| ContainerError::Image {
        image: short(image),
        why,
    };
    if image.is_empty() {
        return Err(fail("the image is empty".into()));
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Err(fail(format!(
            "{} bytes, longer than the limit of {MAX_IMAGE_BYTES}",
            image.len()
        )));
    }
    if !image.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(fail("it must start with a letter or a digit".into()));
    }
    if let Some(c) = image
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return Err(fail(format!(
            "the character {c:?} is not allowed (letters, digits and . _ - / : @)"
        )));
    }
    Ok(())
}

fn check_env(name: &str, value: &str) -> Result<(), ContainerError> {
    let fail = |why: String| ContainerError::Env {
        name: short(name),
        why,
    };
    let valid = name.len() <= 256
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(fail(
            "a name is 1 to 256 letters, digits and `_`, not starting with a digit".into(),
        ));
    }
    if name.starts_with("ORCH_") {
        return Err(fail(
            "names starting with ORCH_ are orch's own (ORCH_RUN, ORCH_NODE, ORCH_ATTEMPT)".into(),
        ));
    }
    if value.len() > MAX_ENV_VALUE_BYTES {
        return Err(fail(format!(
            "the value has {} bytes, more than the limit of {MAX_ENV_VALUE_BYTES}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(fail("the value holds a NUL byte".into()));
    }
    Ok(())
}

/// An absolute path without control characters, bounded.
fn check_path(p: &str) -> Result<(), String> {
    if p.len() > MAX_PATH_BYTES {
        return Err(format!(
            "{} bytes, longer than the limit of {MAX_PATH_BYTES}",
            p.len()
        ));
    }
    if !p.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if has_control(p) {
        return Err("holds a control character".into());
    }
    Ok(())
}

fn check_mount(m: &Mount, python: bool) -> Result<(), ContainerError> {
    let fail = |why: String| ContainerError::Mount {
        host: short(&m.source),
        target: short(&m.target),
        why,
    };
    if !m.source.starts_with('/') {
        return Err(fail("the source must be an absolute host path".into()));
    }
    if !m.target.starts_with('/') {
        return Err(fail(
            "the target must be an absolute path in the container".into(),
        ));
    }
    for (what, p) in [("source", &m.source), ("target", &m.target)] {
        check_path(p).map_err(|why| fail(format!("the {what} {why}")))?;
        // The engines read `--mount` as comma-separated `key=value`
        // options: a comma would start an option of the path's choosing.
        if p.contains(',') {
            return Err(fail(format!(
                "the {what} holds a comma, which the engines' mount syntax cannot carry"
            )));
        }
        if Path::new(p)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(fail(format!("the {what} holds `..`")));
        }
    }
    if python && (m.target == "/orch" || m.target.starts_with("/orch/")) {
        return Err(fail(
            "/orch is where a Python task finds orch's helper and the workflow's folder".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_that_could_be_options_or_hold_odd_characters_are_refused() {
        for ok in [
            "localhost/orch-busybox",
            "python:3.12-slim",
            "reg.example:5000/a/b@sha256:0123abcd",
        ] {
            assert!(check_image(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("--privileged", "start with a letter"),
            ("img name", "' '"),
            ("img\n", "'\\n'"),
        ] {
            let e = check_image(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = "a".repeat(MAX_IMAGE_BYTES + 1);
        assert!(check_image(&long)
            .unwrap_err()
            .to_string()
            .contains("limit of 512"));
    }

    #[test]
    fn mounts_must_be_absolute_without_commas_or_dotdot() {
        let c = |m: Mount| Container::new("img").mount(m).check();
        assert!(c(Mount::bind("/a", "/b").read_only()).is_ok());
        let e = c(Mount::bind("/a,readonly=false", "/b")).unwrap_err();
        assert!(e.to_string().contains("comma"), "{e}");
        let e = c(Mount::bind("/a", "b")).unwrap_err();
        assert!(e.to_string().contains("target must be an absolute"), "{e}");
        let e = c(Mount::bind("/a/../etc", "/b")).unwrap_err();
        assert!(e.to_string().contains("`..`"), "{e}");
        let e = Container::new("img")
            .python_fn("m:f")
            .mount(Mount::bind("/a", "/orch/helper"))
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("/orch is where"), "{e}");
    }

    #[test]
    fn env_names_and_values_are_bounded() {
        let c = |k: &str, v: &str| Container::new("img").env(k, v).check();
        assert!(c("LEVEL_2", "x").is_ok());
        for bad in ["", "2X", "A-B", "A=B", "ORCH_RUN"] {
            assert!(
                matches!(c(bad, "x"), Err(ContainerError::Env { .. })),
                "{bad}"
            );
        }
        assert!(c("A", &"x".repeat(MAX_ENV_VALUE_BYTES + 1)).is_err());
        assert!(c("A", "a\0b").is_err());
    }

    #[test]
    fn one_thing_runs_and_limits_are_sane() {
        let e = Container::new("img")
            .command(["sh"])
            .python_fn("m:f")
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("at most one"), "{e}");
        assert!(Container::new("img").python_fn("m").check().is_err());
        assert!(Container::new("img").python_fn("m;x:f").check().is_err());
        assert!(Container::new("img").python("../x.py").check().is_err());
        assert!(Container::new("img").cpus(0.0).check().is_err());
        assert!(Container::new("img").cpus(f64::NAN).check().is_err());
        assert!(Container::new("img").memory(1024).check().is_err());
        assert!(Container::new("img").workdir("rel").check().is_err());
        assert!(Container::new("img")
            .cpus(0.5)
            .memory(64 << 20)
            .workdir("/w")
            .check()
            .is_ok());
    }
}
