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
        crate::events::stream,
        crate::metrics::metrics,
        crate::health,
        crate::auth::login,
        crate::auth::logout,
        crate::auth::me,
        crate::auth::pair,
        crate::auth::redeem,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

pub(crate) async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
