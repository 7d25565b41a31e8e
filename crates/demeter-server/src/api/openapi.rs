//! The OpenAPI document for the whole HTTP API, generated from the handlers' annotations, served
//! at `/api/v1/openapi.json`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Demeter",
        description = "Greenhouse photo-processing appliance: job status, live events, uploads, actions."
    ),
    paths(
        super::poll::poll_status,
        super::poll::list_sessions,
        super::jobs::job_detail,
        super::jobs::thumbnail,
        super::jobs::overlay,
        super::actions::retry_session,
        super::actions::reprocess_session,
        super::actions::cancel_job,
        super::actions::pause,
        super::actions::resume,
        super::actions::cleanup,
        super::results::results_json,
        super::results::results_csv,
        super::upload::upload,
        super::models::list,
        super::archive::list,
        super::archive::list_csv,
        super::archive::thumbnail,
        super::archive::locations,
        super::archive::series,
        super::models::install,
        crate::events::stream,
        crate::metrics::metrics,
        crate::health,
        crate::auth::login,
        crate::auth::logout,
        crate::auth::me,
        crate::auth::pair,
        crate::auth::redeem,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&ErrorAnswers)
)]
pub struct ApiDoc;

/// The name of the bearer-token security scheme in the document.
const BEARER: &str = "bearer";

/// Adds to every operation what the route table ([`crate::routes`]) declares for it, and the error
/// answers it can give besides its own, each with the [`ErrorBody`](crate::error::ErrorBody)
/// schema, so the document lists every status a client can see:
/// - the role it needs (`x-role`), its bearer-token security requirement, and then 401 and 403;
/// - the guard's (421, 429), the server's (500, 503), malformed parameters (400), and a body's
///   rejections (400, 408, 413, 415, 422; see `error::json_errors`).
struct ErrorAnswers;

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::routes::Access;
        use utoipa::openapi::{
            path::Operation,
            security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
            ContentBuilder, Ref, ResponseBuilder,
        };
        let answer = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let add = |op: &mut Operation, access: Option<Access>| {
            let mut statuses = vec![
                ("421", "Not a name of this appliance"),
                ("429", "Too many failed sign-ins from this address"),
                ("500", "Internal error (logged)"),
                ("503", "At capacity; retry later"),
            ];
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                statuses.push(("400", "A malformed parameter"));
            }
            if op.request_body.is_some() {
                statuses.extend([
                    ("400", "A malformed body"),
                    ("408", "The body stalled"),
                    ("413", "The body is over the limit"),
                    ("415", "The body is not of the declared media type"),
                    ("422", "The body does not fit the schema"),
                ]);
            }
            if let Some(Access::Needs(role)) = access {
                statuses.extend([
                    ("401", "No or unknown credentials"),
                    ("403", "Not allowed for this role, or a cross-site change"),
                ]);
                op.extensions.get_or_insert_with(Default::default).insert("x-role".into(), role.to_string().into());
                op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            }
            for (status, what) in statuses {
                op.responses.responses.entry(status.to_owned()).or_insert_with(|| answer(what).into());
            }
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [
                ("GET", &mut item.get),
                ("POST", &mut item.post),
                ("PUT", &mut item.put),
                ("DELETE", &mut item.delete),
                ("PATCH", &mut item.patch),
            ] {
                if let Some(op) = op {
                    add(op, crate::routes::access(method, path));
                }
            }
        }
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token (`demeter token create`, or DEMETER_ADMIN_TOKEN). The page's \
                         sign-in cookie (`POST /auth/login`) works in its place for same-origin requests.",
                    ))
                    .build(),
            ),
        );
    }
}

pub(crate) async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
