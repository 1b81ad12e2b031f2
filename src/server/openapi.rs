//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations and types (utoipa), served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::{artefacts, events, runners, runs, system, users, workflows};
use super::error::{ApiError, Code, ErrorBody};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "orch", description = "orch's server: runs, workflows under git, events, timers, users and tokens, runners and queues. Every call but status, this document and login needs `Authorization: Bearer orch_…`."),
    paths(
        system::status, system::pipelines, system::cancel_all, system::shutdown,
        users::login, users::list, users::add, users::change, users::remove,
        users::tokens, users::create_token, users::revoke,
        runs::list, runs::start, runs::status, runs::export, runs::events, runs::stream,
        runs::wait, runs::outlook, runs::picture, runs::nodes, runs::node, runs::logs,
        runs::pause, runs::unpause, runs::cancel, runs::input, runs::restart,
        workflows::list, workflows::get, workflows::publish, workflows::delete,
        workflows::history, workflows::execute,
        events::push, events::list, events::start, events::list_timers, events::stop,
        runners::register, runners::heartbeat, runners::claim, runners::report, runners::file,
        runners::artefact, artefacts::list, artefacts::get,
        runners::list, runners::shutdown, runners::queues, runners::clear,
    ),
    components(schemas(ApiError, ErrorBody, Code)),
    modifiers(&Token),
)]
pub struct ApiDoc;

struct Token;

impl Modify for Token {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Every operation may answer with the one error shape (a missing
        // or refused token, a body too large or not JSON, …): the
        // `default` response says so.
        let error = utoipa::openapi::ResponseBuilder::new()
            .description("an error: a stable code and a message naming the thing at fault")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiError")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("default".to_string())
                    .or_insert_with(|| error.clone().into());
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented operation has an access rule, and every rule a
    /// documented operation: the table and the document cannot drift.
    #[test]
    fn the_document_and_the_access_table_agree() {
        let doc = ApiDoc::openapi();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ] {
                if op.is_some() {
                    documented.insert((method.to_string(), path.clone()));
                }
            }
        }
        let ruled: std::collections::BTreeSet<_> = super::super::auth::ROUTES
            .iter()
            .filter(|(_, p, _)| *p != "/api/v1/openapi.json")
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, ruled);
    }
}
