//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! request/response types, served at `GET /api/v1/openapi.json`.
//!
//! [`resp`] holds the reusable error responses (all with the [`ErrorEnvelope`] body); the tests
//! below check that the document's operations are exactly the router's routes.

use crate::error::{ErrorBody, ErrorEnvelope};
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Object, ObjectBuilder, Type};
use utoipa::{Modify, OpenApi};
use warren_domain::agent::{Backend, RuntimeKind};
use warren_domain::user::{Provider, Role, Tier};

/// Reusable error responses for `#[utoipa::path(responses(...))]`.
pub mod resp {
    use std::collections::BTreeMap;
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type,
    };

    fn error_response(description: &str, retry_after: bool) -> RefOr<Response> {
        let mut builder = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        );
        if retry_after {
            builder = builder.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds until a retry may succeed."))
                    .build(),
            );
        }
        RefOr::T(builder.build())
    }

    macro_rules! error_responses {
        ($($(#[$doc:meta])* $name:ident => $status:literal, $description:literal, $retry:literal;)*) => {$(
            $(#[$doc])*
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    BTreeMap::from([($status.to_owned(), error_response($description, $retry))])
                }
            }
        )*};
    }

    error_responses! {
        /// 400: the body is not JSON.
        BadRequest => "400", "The body is not valid JSON, or not JSON at all (`invalid_json`, `unsupported_media_type`).", false;
        /// 401.
        Unauthorized => "401", "Not signed in, or the token is invalid, expired or revoked.", false;
        /// 403.
        Forbidden => "403", "Signed in but not allowed (`not_approved`, `forbidden`).", false;
        /// 404.
        NotFound => "404", "No such resource, or it belongs to someone else.", false;
        /// 409.
        Conflict => "409", "The resource's state forbids the change.", false;
        /// 413.
        TooLarge => "413", "The body is larger than the configured limit.", false;
        /// 422.
        Validation => "422", "A field is missing or invalid; `details.fields` names it.", false;
        /// 422 for a fork point.
        ForkPoint => "422", "A field is invalid (`validation_failed`), or `after` is not a message of the conversation: `after_beyond_end` (past its last event) or `not_a_message`; `details.fields` names `after`.", false;
        /// 429.
        RateLimited => "429", "Rate limit or quota reached (`rate_limited`, `quota_exceeded`).", true;
        /// 502.
        BadGateway => "502", "An upstream (the model provider) could not be reached (`model_unreachable`).", false;
        /// 503.
        Unavailable => "503", "A dependency (email delivery, the read models, a model provider) is unavailable or not configured.", false;
        /// 503: no room for one more awake sandbox.
        AtCapacity => "503", "The platform runs as many sandboxes as it may (`at_capacity`): stop another agent or try again later.", false;
    }
}

/// A string schema listing the stable names of a domain enum.
fn names_schema(names: impl IntoIterator<Item = &'static str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .build()
}

/// `anthropic | openai | openrouter | libertai | custom`.
pub fn provider_schema() -> Object {
    names_schema(Provider::ALL.iter().map(|p| p.as_str()))
}

/// `guest | user | admin`.
pub fn role_schema() -> Object {
    names_schema(Role::ALL.iter().map(|r| r.as_str()))
}

/// `free | pro | enterprise`.
pub fn tier_schema() -> Object {
    names_schema(Tier::ALL.iter().map(|t| t.as_str()))
}

/// `warren | baal_agent`.
pub fn runtime_schema() -> Object {
    names_schema(RuntimeKind::ALL.iter().map(|r| r.as_str()))
}

/// `process | docker | ssh`.
pub fn backend_schema() -> Object {
    names_schema(Backend::ALL.iter().map(|b| b.as_str()))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agent_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Warren API", description = "Deploy your own AI agent and talk to it from anywhere."),
    modifiers(&BearerAuth),
    paths(
        crate::health::health,
        openapi_json,
        crate::auth::routes::login_email,
        crate::auth::routes::verify_magic_link,
        crate::auth::routes::refresh,
        crate::auth::routes::logout,
        crate::auth::routes::logout_all,
        crate::users::get_me,
        crate::users::patch_me,
        crate::users::list_connections,
        crate::users::delete_connection,
        crate::users::link_telegram,
        crate::users::link_wallet,
        crate::auth::routes::providers,
        crate::auth::wallet::challenge,
        crate::auth::wallet::verify,
        crate::auth::oauth::start,
        crate::auth::oauth::callback,
        crate::auth::oauth::exchange,
        crate::auth::device::start,
        crate::auth::device::approve,
        crate::auth::device::token,
        crate::users::link_google,
        crate::users::link_github,
        crate::keys::list_keys,
        crate::keys::add_key,
        crate::keys::delete_key,
        crate::admin::list_users,
        crate::admin::approve,
        crate::admin::reject,
        crate::admin::revoke,
        crate::admin::update_user,
        crate::hosts::list,
        crate::hosts::register,
        crate::hosts::remove,
        crate::hosts::repin,
        crate::agents::list,
        crate::agents::create,
        crate::agents::get,
        crate::agents::update,
        crate::agents::delete,
        crate::agents::status,
        crate::agents::stop,
        crate::agents::start,
        crate::agents::restart,
        crate::agents::repair,
        crate::agents::redeploy,
        crate::agents::health,
        crate::workspace::exec,
        crate::usage::summary,
        crate::usage::history,
        crate::analytics::everyone,
        crate::analytics::own,
        crate::chat::send,
        crate::chat::clear,
        crate::chat::pending,
        crate::chat::file,
        crate::workspace::upload,
        crate::conversations::list,
        crate::conversations::messages,
        crate::conversations::cancel,
        crate::conversations::fork,
        crate::conversations::events,
        crate::feed::events,
        crate::runtime_api::search,
        crate::runtime_api::get_session,
        crate::model_proxy::openai,
        crate::model_proxy::anthropic,
        crate::telegram::intake::webhook,
    ),
    components(schemas(ErrorEnvelope, ErrorBody)),
    tags(
        (name = "auth", description = "Magic-link sign-in and sessions"),
        (name = "users", description = "The caller's profile, connections and API keys"),
        (name = "admin", description = "Approval flow, roles and tiers (admins only)"),
        (name = "agents", description = "Agents, their deployment, and shell commands in them (approved users)"),
        (name = "usage", description = "Usage against the tier's limits"),
        (name = "chat", description = "Messages to agents, streamed runs, and workspace files down and up (approved users)"),
        (name = "conversations", description = "Conversations by last activity and their messages"),
        (name = "runtime", description = "What agent runtimes call back on, with their agent token: session tools and the model proxy"),
        (name = "telegram", description = "Telegram's webhook (authenticated by its secret token)"),
        (name = "meta", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub fn routes() -> ApiRouter {
    ApiRouter::new().get("/openapi.json", openapi_json)
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "get_openapi", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json")))]
pub(crate) async fn openapi_json(
    _: axum::extract::State<AppState>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteSpec;

    /// Every (method, path) the document describes.
    pub fn documented() -> Vec<RouteSpec> {
        let mut routes = vec![];
        for (path, item) in ApiDoc::openapi().paths.paths {
            let operations = [
                ("get", item.get.is_some()),
                ("post", item.post.is_some()),
                ("put", item.put.is_some()),
                ("patch", item.patch.is_some()),
                ("delete", item.delete.is_some()),
                ("head", item.head.is_some()),
                ("options", item.options.is_some()),
                ("trace", item.trace.is_some()),
            ];
            for (method, present) in operations {
                if present {
                    routes.push(RouteSpec {
                        method: method.to_owned(),
                        path: path.clone(),
                    });
                }
            }
        }
        routes.sort();
        routes
    }

    #[test]
    fn the_document_describes_exactly_the_routes_the_router_serves() {
        let served = crate::server::api().table();
        let documented = documented();
        let missing: Vec<_> = served.iter().filter(|r| !documented.contains(r)).collect();
        let extra: Vec<_> = documented.iter().filter(|r| !served.contains(r)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "served but undocumented: {missing:?}\ndocumented but not served: {extra:?}"
        );
        assert!(served.len() >= 30, "{served:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_operation_documents_its_errors() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                let responses = operation["responses"].as_object().expect("responses");
                // A sign-in's redirects (302) are its success.
                assert!(
                    responses
                        .keys()
                        .any(|status| status.starts_with('2') || status.starts_with('3')),
                    "{method} {path} has no success response"
                );
                let secured = operation.get("security").is_some();
                if secured {
                    assert!(
                        responses.contains_key("401"),
                        "{method} {path} needs auth but documents no 401"
                    );
                }
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        assert!(
                            schema == "#/components/schemas/ErrorEnvelope",
                            "{method} {path} {status} is not the error envelope"
                        );
                    }
                }
            }
        }
        assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
