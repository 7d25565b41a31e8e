//! `/api/v1/models`: the models jobs may run with, and installing one while the appliance runs.
//!
//! Installing is a command to the engine, which checks the model exactly as start-up would: a
//! model that would stop start-up is refused with 422 and the same reason (the tensor named and
//! what was expected), and nothing is kept. One that loads is kept in the data folder, loads at
//! every later start, and can be chosen for a reprocess at once.

use std::collections::BTreeMap;

use axum::{
    extract::{multipart::MultipartError, Multipart, State},
    http::StatusCode,
    Json,
};
use demeter_domain::command::{Command, ModelUpload, Outcome, HINT_FIELDS};
use serde::Serialize;

use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

/// Largest model file accepted (the biggest Ultralytics exports are a few hundred MB).
pub const MAX_MODEL_BYTES: usize = 1 << 30;
/// Largest manifest or form value accepted.
const MAX_TEXT_BYTES: usize = 64 << 10;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelsResponse {
    /// The model a photo runs with unless a reprocess names another.
    pub default: String,
    /// Every model, the default first.
    pub models: Vec<demeter_domain::health::ModelHealth>,
    /// Where each runs and why.
    pub devices: Vec<demeter_domain::health::ModelDevice>,
}

/// `GET /api/v1/models`: the models installed, the default first, with where each runs.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", responses((status = 200, body = ModelsResponse)))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<ModelsResponse> {
    let h = (state.health)();
    Json(ModelsResponse { default: h.model.name, models: h.installed_models, devices: h.devices })
}

/// The install form, for the OpenAPI document (other fields are refused with 400).
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct InstallForm {
    /// The ONNX file.
    #[schema(value_type = String, format = Binary)]
    model: Vec<u8>,
    /// Its `manifest.toml` (a file or text). Absent: inferred from the export's Ultralytics
    /// metadata, as `demeter model import` does, with the fields below for what it does not say.
    #[schema(value_type = Option<String>, format = Binary)]
    manifest: Option<Vec<u8>>,
    name: Option<String>,
    /// `yolo-detect` or `yolo-seg`.
    family: Option<String>,
    /// Comma-separated, in index order.
    classes: Option<String>,
    /// Comma-separated.
    plant_classes: Option<String>,
    /// `v8`, `v5` or `end-to-end`.
    layout: Option<String>,
    input_size: Option<u32>,
    confidence: Option<f64>,
    iou: Option<f64>,
}

/// `POST /api/v1/models` (admin): checks a model as start-up would and installs it.
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body(content = inline(InstallForm), content_type = "multipart/form-data"), responses((status = 201, body = demeter_domain::command::InstalledModel, description = "Installed: it can be named in a reprocess now, and loads at every start"), (status = 400, body = ErrorBody, description = "No model file, or a malformed form"), (status = 409, body = ErrorBody, description = "A model of that name is installed"), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody, description = "The model would not load: the reason start-up would give")))]
pub(crate) async fn install(
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<demeter_domain::command::InstalledModel>), AppError> {
    let mut onnx = None;
    let mut manifest = None;
    let mut hints = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or("").chars().take(64).collect::<String>();
        match name.as_str() {
            "model" => {
                let file_name =
                    field.file_name().and_then(super::upload::safe_base_name).unwrap_or_else(|| "model.onnx".into());
                let bytes = field.bytes().await.map_err(form_error)?;
                onnx = Some((file_name, bytes.to_vec()));
            }
            text if text == "manifest" || HINT_FIELDS.contains(&text) => {
                let bytes = field.bytes().await.map_err(form_error)?;
                if bytes.len() > MAX_TEXT_BYTES {
                    return Err(AppError::TooLarge(format!("field {name:?} is over {} KB", MAX_TEXT_BYTES >> 10)));
                }
                // A well-formed form whose text cannot be a manifest or a value: 422, as for a
                // model that does not load.
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| AppError::Unprocessable(format!("field {name:?} is not UTF-8 text")))?;
                if name == "manifest" {
                    manifest = Some(text);
                } else {
                    hints.insert(name, text);
                }
            }
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown field {other:?}; the form's fields are model, manifest, {}",
                    HINT_FIELDS.join(", ")
                )))
            }
        }
    }
    let Some((file_name, onnx)) = onnx else {
        return Err(AppError::BadRequest(
            "no model: send multipart/form-data with the ONNX file in the field \"model\"".into(),
        ));
    };
    let upload = ModelUpload { file_name, onnx, manifest, hints };
    match super::actions::execute(&state, Command::InstallModel(Box::new(upload))).await? {
        Outcome::ModelInstalled(m) => Ok((StatusCode::CREATED, Json(*m))),
        other => Err(AppError::Internal(format!("unexpected outcome {other:?}").into())),
    }
}

fn form_error(e: MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::TooLarge(format!("model too large: at most {} MB", MAX_MODEL_BYTES >> 20))
    } else {
        AppError::BadRequest(format!("malformed form: {}", e.body_text()))
    }
}
