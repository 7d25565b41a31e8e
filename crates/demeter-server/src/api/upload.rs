//! `POST /api/v1/photos/upload`: photos from a phone or PC on the LAN, into the watched folder.
//!
//! The session is created first, so its id comes back at once; each file is streamed to a
//! hidden `.name.part` (the watcher ignores dotfiles) in `uploads/<session>/` and renamed when
//! complete, so the watcher never sees half a photo. The watcher then queues them like any
//! other photo, into this session.
//!
//! Only photos are kept, by the rule the watcher applies ([`demeter_domain::photo::is_photo`]):
//! any other file (notes, a video, an editor's leftover) would sit in the folder and never
//! become a job, so it is not saved and the answer lists it under `skipped`, with why. An upload
//! with no photo at all answers 415.

use std::path::{Path, PathBuf};

use axum::{
    extract::{multipart::MultipartError, Multipart, State},
    http::StatusCode,
    Extension, Json,
};
use demeter_domain::{session::UPLOADS_DIR, SessionId, SessionSource, UploadSession};
use demeter_store::Store;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

/// Largest single photo accepted.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// An upload that sends nothing for this long is abandoned (a stalled or malicious client
/// must not hold a connection and a half-written file forever).
pub const STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest whole upload request.
pub const MAX_UPLOAD_BYTES: usize = 1 << 30;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadResponse {
    pub upload_session_id: String,
    /// Names the photos were stored under (made safe and unique).
    pub files: Vec<String>,
    /// Files that were not saved because they are not photos, with the reason.
    pub skipped: Vec<Skipped>,
    pub status_url: String,
}

/// A file of the upload that is not a photo.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    /// The file's name as sent (made safe).
    pub name: String,
    pub reason: String,
}

/// Why `name`, starting with `head`, is not a photo; `None` when it is one.
fn not_a_photo(name: &str, head: &[u8]) -> Option<String> {
    let path = Path::new(name);
    if demeter_domain::photo::is_photo(path, head) {
        None
    } else if demeter_domain::photo::is_ignored_path(path) {
        Some("a temporary or system file by its name (e.g. .part, .tmp, Thumbs.db), never a photo".into())
    } else {
        Some("not a photo: neither its name nor its content is an image (JPEG, PNG, TIFF, WebP)".into())
    }
}

/// Keeps the last path component, drops control characters and separators and leading dots,
/// caps the length; `None` when nothing is left.
pub fn safe_base_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control() && !matches!(c, '/' | '\\' | ':')).collect();
    let trimmed = cleaned.trim().trim_start_matches('.').to_owned();
    let name: String = trimmed.chars().take(120).collect();
    (!name.is_empty()).then_some(name)
}

/// [`safe_base_name`], or `photo-<index + 1>.jpg` when nothing is left.
pub fn safe_name(raw: &str, index: usize) -> String {
    safe_base_name(raw).unwrap_or_else(|| format!("photo-{}.jpg", index + 1))
}

fn unique(dir: &Path, name: &str) -> PathBuf {
    let candidate = dir.join(name);
    if !candidate.exists() {
        return candidate;
    }
    let (stem, ext) =
        name.rsplit_once('.').map(|(s, e)| (s.to_owned(), format!(".{e}"))).unwrap_or((name.to_owned(), String::new()));
    (2..).map(|n| dir.join(format!("{stem}-{n}{ext}"))).find(|p| !p.exists()).expect("a free name")
}

fn multipart_error(e: MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::TooLarge(format!("upload too large: at most {} MB per request", MAX_UPLOAD_BYTES >> 20))
    } else {
        AppError::BadRequest(format!("malformed upload: {}", e.body_text()))
    }
}

/// The upload's form, for the OpenAPI document: one or more files (any field that carries a
/// file name is taken; a field without one is refused).
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UploadForm {
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1)]
    photos: Vec<Vec<u8>>,
}

#[utoipa::path(post, path = "/api/v1/photos/upload", tag = "upload", request_body(content = inline(UploadForm), content_type = "multipart/form-data", description = "One or more file fields"), responses((status = 201, body = UploadResponse, description = "The photos were saved; files that are not photos are listed under `skipped`"), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody, description = "None of the files is a photo")))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Extension(who): Extension<demeter_auth::Identity>,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<UploadResponse>), AppError> {
    let id = SessionId::new_v7();
    let dir = state.config.watch.dir.join(UPLOADS_DIR).join(id.to_string());
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut session_created = false;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let Some(raw_name) = field.file_name().map(str::to_owned) else {
            // Only files: a stray text field is a client's mistake, said so, not silently dropped.
            let name = field.name().unwrap_or("").chars().take(64).collect::<String>();
            return Err(AppError::BadRequest(format!(
                "unexpected form field {name:?} without a file; send the photos as file fields"
            )));
        };
        let name = safe_name(&raw_name, files.len() + skipped.len());
        // Enough of the file to tell what it is.
        let mut head = Vec::new();
        while head.len() < demeter_domain::photo::SNIFF_LEN {
            match next_chunk(&mut field, None).await? {
                Some(chunk) => head.extend_from_slice(&chunk),
                None => break,
            }
        }
        if let Some(reason) = not_a_photo(&name, &head) {
            // The rest of this field is skipped by asking for the next one.
            skipped.push(Skipped { name, reason });
            continue;
        }
        if !session_created {
            let now = state.clock.now();
            let session = UploadSession {
                id,
                created_at: now,
                expires_at: Store::expires(now, state.config.store.session_ttl_hours),
                source: SessionSource::Upload { files: 0, owner: Some(who.name.clone()) },
            };
            super::actions::execute(&state, demeter_domain::command::Command::CreateUploadSession(session)).await?;
            tokio::fs::create_dir_all(&dir).await.map_err(|e| AppError::Internal(Box::new(e)))?;
            session_created = true;
        }
        let target = unique(&dir, &name);
        let final_name = target.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let part = dir.join(format!(".{final_name}.part"));
        let mut out = tokio::fs::File::create(&part).await.map_err(|e| AppError::Internal(Box::new(e)))?;
        let mut written: u64 = 0;
        let mut first = Some(axum::body::Bytes::from(head));
        loop {
            let chunk = match first.take() {
                Some(head) => head,
                None => match next_chunk(&mut field, Some(&part)).await? {
                    Some(c) => c,
                    None => break,
                },
            };
            written += chunk.len() as u64;
            if written > MAX_FILE_BYTES {
                drop(out);
                let _ = tokio::fs::remove_file(&part).await;
                return Err(AppError::TooLarge(format!("{final_name} is larger than {} MB", MAX_FILE_BYTES >> 20)));
            }
            out.write_all(&chunk).await.map_err(|e| AppError::Internal(Box::new(e)))?;
        }
        out.sync_all().await.map_err(|e| AppError::Internal(Box::new(e)))?;
        drop(out);
        tokio::fs::rename(&part, &target).await.map_err(|e| AppError::Internal(Box::new(e)))?;
        files.push(final_name);
    }
    if files.is_empty() && skipped.is_empty() {
        return Err(AppError::BadRequest(
            "no files in the upload (send multipart/form-data with one or more file fields)".into(),
        ));
    }
    if files.is_empty() {
        let list = skipped.iter().map(|s| format!("{} ({})", s.name, s.reason)).collect::<Vec<_>>().join("; ");
        return Err(AppError::UnsupportedMediaType(format!("none of the files is a photo: {list}")));
    }
    Ok((
        StatusCode::CREATED,
        Json(UploadResponse {
            upload_session_id: id.to_string(),
            status_url: format!("/api/v1/photos/jobs/status?upload_session_id={id}"),
            files,
            skipped,
        }),
    ))
}

/// The field's next chunk, within [`STALL`]; on an error the partial file `part`, if any, is
/// removed.
async fn next_chunk(
    field: &mut axum::extract::multipart::Field<'_>,
    part: Option<&Path>,
) -> Result<Option<axum::body::Bytes>, AppError> {
    let err = match tokio::time::timeout(STALL, field.chunk()).await {
        Ok(Ok(chunk)) => return Ok(chunk),
        Ok(Err(e)) => multipart_error(e),
        Err(_) => AppError::Timeout(format!("the upload stalled for {} s", STALL.as_secs())),
    };
    if let Some(part) = part {
        let _ = tokio::fs::remove_file(part).await;
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("IMG_0001.JPG", 0), "IMG_0001.JPG");
        assert_eq!(safe_name("../../etc/passwd", 0), "passwd");
        assert_eq!(safe_name("C:\\photos\\tray.jpg", 0), "tray.jpg");
        assert_eq!(safe_name(".hidden.jpg", 0), "hidden.jpg");
        assert_eq!(safe_name("a\nb.jpg", 0), "ab.jpg");
        assert_eq!(safe_name("", 2), "photo-3.jpg");
    }
}
