//! Workflows under git: list, get any version, publish (a commit), delete
//! (a commit), history (the commits), execute (a run pinned to a commit).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::super::auth::Caller;
use super::super::error::{ApiError, ApiResult, Code};
use super::super::extract::{Body, Path, Query};
use super::super::AppState;
use super::runs::{detach, Started};
use crate::repo::{Author, RepoError, RepoErrorKind, Version};

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> ApiError {
        let message = e.to_string();
        match e.kind() {
            RepoErrorKind::NotFound => ApiError::not_found(message),
            RepoErrorKind::Invalid => ApiError::bad(message),
            RepoErrorKind::Conflict => ApiError::conflict(message),
            _ => ApiError::internal(message),
        }
    }
}

/// A commit of a workflow's history.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionItem {
    /// The full commit hash.
    pub commit: String,
    /// Who made it (the user).
    pub author: String,
    /// When (RFC 3339).
    pub time: String,
    /// The message.
    pub message: String,
    /// This commit removed the workflow.
    pub deleted: bool,
}

impl From<Version> for VersionItem {
    fn from(v: Version) -> VersionItem {
        VersionItem {
            commit: v.commit,
            author: v.author.name,
            time: v.time,
            message: v.message,
            deleted: v.deleted,
        }
    }
}

/// A published workflow.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowItem {
    /// Its name.
    pub name: String,
    /// Its main file (`workflow.yaml`, `.yml`, `.json` or `.py`).
    pub main_file: String,
    /// The last commit that changed it.
    pub last: VersionItem,
}

/// `GET /workflows`.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows",
    responses((status = 200, body = Vec<WorkflowItem>)),
    security(("token" = [])))]
pub async fn list(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<WorkflowItem>>> {
    let repo = s.repo.clone();
    let entries = blocking_repo(move || repo.list()).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| WorkflowItem {
                name: e.name,
                main_file: e.main_file,
                last: e.last.into(),
            })
            .collect(),
    ))
}

/// A file of a workflow.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FileItem {
    /// Its path in the workflow's folder.
    pub path: String,
    /// Its content (UTF-8 text).
    pub content: String,
    /// SHA-256 of the content (hex); absent in a publish request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A workflow at one commit.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowVersion {
    /// Its name.
    pub name: String,
    /// The commit read.
    pub commit: String,
    /// The main file's path.
    pub main_file: String,
    /// Every file.
    pub files: Vec<FileItem>,
}

/// Which version.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// A commit (4 to 40 hex digits; default: the newest).
    #[param(pattern = "^[0-9a-fA-F]{4,40}$")]
    pub at: Option<String>,
}

/// `GET /workflows/{name}`: a workflow's files at a commit.
#[utoipa::path(get, path = "/api/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "the workflow", pattern = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"), AtQuery),
    responses((status = 200, body = WorkflowVersion), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<WorkflowVersion>> {
    let repo = s.repo.clone();
    let snap = blocking_repo(move || repo.get(&name, q.at.as_deref())).await?;
    let files = snap
        .files
        .into_iter()
        .map(|f| {
            let content = String::from_utf8(f.content).map_err(|_| {
                ApiError::new(
                    Code::Unprocessable,
                    format!("file `{}` is not UTF-8 text", f.path),
                )
            })?;
            Ok(FileItem {
                path: f.path,
                content,
                sha256: Some(f.sha256),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(WorkflowVersion {
        name: snap.workflow,
        commit: snap.commit,
        main_file: snap.main_file,
        files,
    }))
}

/// What to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// The commit message.
    pub message: String,
    /// The workflow's files: exactly one main file (`workflow.yaml`,
    /// `.yml`, `.json` or `.py`) and any scripts beside it. Files not
    /// given are removed.
    pub files: Vec<FileItem>,
}

/// What a publish did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishedItem {
    /// The commit (the current one when nothing changed).
    pub version: VersionItem,
    /// Whether a commit was made.
    pub changed: bool,
}

/// `PUT /workflows/{name}`: publish, as one commit by the caller. The
/// workflow is checked first (read, compiled and validated like a run's
/// registration): a workflow that would not run is refused whole.
#[utoipa::path(put, path = "/api/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "the workflow", pattern = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")),
    request_body = PublishBody,
    responses((status = 200, body = PublishedItem), (status = 400, body = ApiError),
        (status = 409, body = ApiError), (status = 413, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn publish(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(name): Path<String>,
    Body(body): Body<PublishBody>,
) -> ApiResult<Json<PublishedItem>> {
    let files: Vec<(String, Vec<u8>)> = body
        .files
        .into_iter()
        .map(|f| (f.path, f.content.into_bytes()))
        .collect();
    let repo = s.repo.clone();
    let data = s.data.clone();
    let published = blocking_api(move || {
        check_publishable(&data, &name, &files)?;
        repo.publish(
            &name,
            files,
            &Author::new(me.user.clone(), ""),
            &body.message,
        )
        .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(PublishedItem {
        version: published.version.into(),
        changed: published.changed,
    }))
}

/// Loads the files as a run would, in a scratch folder: a publish of a
/// workflow that does not compile is refused with the file's own error.
/// The web view's editor calls it as the text is typed (nothing is
/// committed).
pub(crate) fn check_publishable(
    data: &std::path::Path,
    name: &str,
    files: &[(String, Vec<u8>)],
) -> ApiResult<()> {
    crate::repo::validate_name(name)?;
    let main = files
        .iter()
        .find(|(p, _)| crate::repo::MAIN_FILES.contains(&p.as_str()))
        .map(|(p, _)| p.clone())
        .ok_or_else(|| {
            ApiError::bad(format!(
                "field `files`: workflow `{name}` needs one main file ({})",
                crate::repo::MAIN_FILES.join(", ")
            ))
        })?;
    let scratch = data.join("scratch");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", scratch.display())))?;
    let dir = tempfile_dir(&scratch)?;
    for (path, bytes) in files {
        // The repository checks paths again, with its limits; here no
        // path may leave the scratch folder before that.
        let plain = !path.is_empty()
            && !path.contains(['\\', '\0'])
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with('-'))
            && std::path::Path::new(path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ApiError::bad(format!(
                "field `files`: path {:?} of workflow `{name}` is refused: a relative path of plain names, without `.`, `..`, `\\` or NUL",
                crate::protocol::quote(path)
            )));
        }
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ApiError::internal(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::write(&target, bytes)
            .map_err(|e| ApiError::internal(format!("writing {}: {e}", target.display())))?;
    }
    let loaded = crate::file::load_all(&dir.join(&main));
    let _ = std::fs::remove_dir_all(&dir);
    // Messages name the file as the client sent it, not the scratch copy.
    let scratch_prefix = format!("{}/", dir.display());
    let compiled = loaded.map_err(|e| {
        let message = e.to_string().replace(&scratch_prefix, "");
        ApiError::new(
            Code::Unprocessable,
            format!("workflow `{name}` does not load: {message}"),
        )
    })?;
    for c in compiled {
        crate::engine::validate(&c.definition)
            .map_err(|e| ApiError::new(Code::Unprocessable, format!("workflow `{name}`: {e}")))?;
    }
    Ok(())
}

/// A fresh folder under `parent`.
fn tempfile_dir(parent: &std::path::Path) -> ApiResult<std::path::PathBuf> {
    for _ in 0..16 {
        let dir = parent.join(format!("p-{}", crate::time::new_run_id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "creating {}: {e}",
                    dir.display()
                )))
            }
        }
    }
    Err(ApiError::internal("no fresh scratch folder could be made"))
}

/// Why a workflow is deleted.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The commit message (default: "delete NAME").
    pub message: Option<String>,
}

/// `DELETE /workflows/{name}`: a commit that removes it (its history and
/// every old version stay readable).
#[utoipa::path(delete, path = "/api/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "the workflow", pattern = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"), DeleteQuery),
    responses((status = 200, body = VersionItem), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Json<VersionItem>> {
    let repo = s.repo.clone();
    let v = blocking_repo(move || {
        let message = q.message.unwrap_or_else(|| format!("delete {name}"));
        repo.delete(&name, &Author::new(me.user.clone(), ""), &message)
    })
    .await?;
    Ok(Json(v.into()))
}

/// Which commits.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Older than this commit (the previous page's `next`).
    #[param(pattern = "^[0-9a-fA-F]{4,40}$")]
    pub before: Option<String>,
}

/// A page of history.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryItem {
    /// Newest first.
    pub versions: Vec<VersionItem>,
    /// Pass as `before` for older commits.
    pub next: Option<String>,
}

/// `GET /workflows/{name}/history`.
#[utoipa::path(get, path = "/api/v1/workflows/{name}/history", tag = "workflows",
    params(("name" = String, Path, description = "the workflow", pattern = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"), HistoryQuery),
    responses((status = 200, body = HistoryItem), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn history(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<HistoryItem>> {
    let repo = s.repo.clone();
    let page = blocking_repo(move || {
        repo.history(
            &name,
            q.limit.unwrap_or(crate::repo::DEFAULT_HISTORY_LIMIT),
            q.before.as_deref(),
        )
    })
    .await?;
    Ok(Json(HistoryItem {
        versions: page.versions.into_iter().map(Into::into).collect(),
        next: page.next,
    }))
}

/// `POST /workflows/{name}/runs`: execute, pinned to a commit.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs", tag = "workflows",
    params(("name" = String, Path, description = "the workflow", pattern = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")),
    request_body = super::runs::ExecuteBody,
    responses((status = 201, body = Started), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn execute(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Body(body): Body<super::runs::ExecuteBody>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let started = execute_published(&s, &name, body.commit, body.params).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// Starts a run of a published workflow: its files at the commit are
/// written to the run's own folder, loaded from there and started with
/// the commit and the files' hashes recorded. Editing the workflow later
/// changes nothing for this run.
pub(super) async fn execute_published(
    s: &Arc<AppState>,
    name: &str,
    commit: Option<String>,
    params: Map<String, Value>,
) -> ApiResult<Started> {
    let run = crate::time::new_run_id();
    let source_dir = s.data.join("runs").join(&run).join("source");
    let repo = s.repo.clone();
    let (name2, dir) = (name.to_string(), source_dir.clone());
    let slots = s.slots;
    let (compiled, source) = blocking_api(move || {
        // At the head unless a commit is asked for; a version read
        // before costs one git call (`Repo::get`).
        let snap = match commit {
            Some(c) => repo.checkout(&name2, &c, &dir)?,
            None => repo.checkout_head(&name2, &dir)?,
        };
        let compiled = crate::file::load(&dir.join(&snap.main_file), &params).map_err(|e| {
            ApiError::new(
                Code::Unprocessable,
                format!("workflow `{name2}` at {}: {e}", snap.commit),
            )
        })?;
        let source = crate::model::Source {
            commit: snap.commit.clone(),
            files: snap
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect(),
        };
        Ok((compiled, source))
    })
    .await?;
    let mut opts = compiled.options();
    opts.run_id = Some(run.clone());
    opts.per_run_dir = true;
    opts.source = Some(source.clone());
    if compiled.max_parallel.is_none() {
        opts.max_parallel = slots;
    }
    opts.live_picture = false;
    let handle = s.engine.start(&compiled.definition, &opts).await?;
    detach(handle);
    Ok(Started {
        run,
        workflow: compiled.definition.name.clone(),
        commit: Some(source.commit),
    })
}

/// Runs repository work off the runtime.
async fn blocking_repo<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RepoError> + Send + 'static,
) -> ApiResult<T> {
    blocking_api(move || f().map_err(ApiError::from)).await
}

async fn blocking_api<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
}
