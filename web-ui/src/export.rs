//! Exports (role operator or admin): `GET /api/streams/{camera}/{stream}/export.mp4?start_ms=&end_ms=`
//! streams the range as one fragmented MP4 (the playback [`Plan`] in export mode: it runs across gaps)
//! and, once every byte went out, writes its signed evidence manifest
//! (`nvr_evidence::manifest`) to `<state_dir>/exports/<id>.json`, served by
//! `GET /api/exports/{id}/manifest`. Before a byte is sent every source segment must be covered by
//! the node's signed log with the catalog's size and SHA-256; after the last byte each source file is
//! hashed again and must still match its leaf, else no manifest is written. Every export, refusal and
//! outcome goes to the audit log.

pub mod key;
pub mod log;

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use nvr_evidence::manifest::{ExportedFile, Manifest, SourceSegment, Span, MANIFEST_FORMAT};
use rand::RngCore;
use ring::digest::{Context, SHA256};
use serde::Deserialize;

use crate::audit::AuditEntry;
use crate::auth::Authed;
use crate::error::ApiError;
use crate::playback::body::ByteRange;
use crate::playback::http::{plan_headers, plan_request, stream_body, Tap};
use crate::playback::{Mode, Plan};
use crate::server::AppState;
use crate::users::Role;
use log::{LogError, LogView};

/// Where manifests are kept: `<state_dir>/exports/`.
pub const EXPORTS_DIR: &str = "exports";

#[derive(Deserialize)]
pub struct ExportQuery {
    start_ms: i64,
    end_ms: i64,
}

fn client(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

fn audit(state: &AppState, event: &str, user: &str, client: &str, ok: bool, detail: &str) {
    state.audit.record(&AuditEntry {
        time_ms: state.clock.now_utc_ms(),
        event,
        user,
        client,
        ok,
        detail,
    });
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "not_logged", message)
}

/// The source segments with their leaves (proofs come after the last byte); refuses a segment the
/// log's head does not cover with the catalog's size and hash.
fn sources(plan: &Plan, log: &LogView) -> Result<Vec<SourceSegment>, ApiError> {
    plan.segments
        .iter()
        .map(|(row, _)| {
            let found = log.leaf(&row.path).map_err(|e| ApiError::internal(e.to_string()))?;
            let (index, leaf) = found.ok_or_else(|| {
                conflict(format!(
                    "segment {} is not in the node's signed log yet (the sync agent logs a segment \
                     once it is sealed): choose an earlier range or wait",
                    row.path
                ))
            })?;
            let catalog_hash = row.sha256.clone().unwrap_or_default();
            if base::hex::encode(&leaf.sha256) != catalog_hash
                || i64::try_from(leaf.size_bytes).ok() != Some(row.size_bytes)
            {
                return Err(conflict(format!(
                    "segment {}: the catalog's size or SHA-256 differs from its leaf in the signed log",
                    row.path
                )));
            }
            Ok(SourceSegment {
                leaf,
                leaf_index: Some(index),
                inclusion_proof: Vec::new(),
            })
        })
        .collect()
}

/// What the manifest needs besides the file's hash.
struct Pending {
    id: String,
    user: String,
    client: String,
    camera: String,
    stream: String,
    requested: Span,
    file_name: String,
    sources: Vec<SourceSegment>,
    log: LogView,
    plan: Arc<Plan>,
}

/// After the last byte: the source files must still hash to their leaves; then the manifest.
fn finish(state: &AppState, p: &Pending, size_bytes: u64, sha256: String) -> Result<(), String> {
    for ((_, path), s) in p.plan.segments.iter().zip(&p.sources) {
        let now = store::sha256_file(path).map_err(|e| e.to_string())?;
        if now != base::hex::encode(&s.leaf.sha256) {
            return Err(format!(
                "{} no longer hashes to its leaf: not signing",
                s.leaf.path
            ));
        }
    }
    let indices: Vec<u64> = p.sources.iter().filter_map(|s| s.leaf_index).collect();
    let proofs = p.log.proofs(&indices).map_err(|e| e.to_string())?;
    let mut segments = p.sources.clone();
    for (s, proof) in segments.iter_mut().zip(proofs) {
        s.inclusion_proof = proof.iter().map(|h| base::hex::encode(h)).collect();
    }
    let mut m = Manifest {
        format: MANIFEST_FORMAT.into(),
        node: state.node.clone(),
        camera: p.camera.clone(),
        stream: p.stream.clone(),
        requested: p.requested,
        covered: Span {
            start_ms: p.plan.start_ms,
            end_ms: p.plan.end_ms,
        },
        gaps: p
            .plan
            .gaps
            .iter()
            .map(|&(start_ms, end_ms)| Span { start_ms, end_ms })
            .collect(),
        exported_by: p.user.clone(),
        exported_at_ms: state.clock.now_utc_ms(),
        file: ExportedFile {
            name: p.file_name.clone(),
            layout: "fragmented mp4".into(),
            size_bytes,
            sha256,
        },
        segments,
        tree_head: Some(p.log.head.clone()),
        export_public_key: String::new(),
        signature: String::new(),
    };
    m.sign(&state.export_key.public(), &|msg| {
        state.export_key.sign(msg)
    });
    let dir = state.state_dir.join(EXPORTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.json", p.id));
    base::fs::write_atomic(&path, &m.to_file_bytes(), Some(0o640))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `export.mp4`: see the module documentation.
pub async fn export(
    req: HttpRequest,
    state: web::Data<AppState>,
    authed: Authed,
    path: web::Path<(String, String)>,
    q: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let (camera, stream) = path.into_inner();
    let user = authed.0.user.clone();
    let client = client(&req);
    let what = format!("{camera}/{stream} {}..{}", q.start_ms, q.end_ms);
    if let Err(e) = authed.require(Role::Operator) {
        audit(&state, "export_refused", &user, &client, false, &what);
        return Err(e);
    }
    let plan = plan_request(
        &state,
        camera.clone(),
        stream.clone(),
        q.start_ms,
        q.end_ms,
        Mode::Export,
    )
    .await?;
    let plan = Arc::new(plan);
    let (data_dir, node, planned) = (state.data_dir.clone(), state.node.clone(), plan.clone());
    let checked = web::block(move || {
        let log = LogView::open(&data_dir, &node).map_err(|e| match e {
            LogError::NoLog(_) => conflict(e.to_string()),
            e => ApiError::internal(e.to_string()),
        })?;
        sources(&planned, &log).map(|s| (log, s))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (log, sources) = match checked {
        Ok(s) => s,
        Err(e) => {
            audit(
                &state,
                "export_refused",
                &user,
                &client,
                false,
                &format!("{what}: {}", e.message),
            );
            return Err(e);
        }
    };
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let id = base::hex::encode(&id);
    let file_name = format!("{camera}-{stream}-{}-{}.mp4", plan.start_ms, plan.end_ms);
    audit(
        &state,
        "export",
        &user,
        &client,
        true,
        &format!("{what} id {id}"),
    );
    let total = plan.total_len;
    let pending = Pending {
        id: id.clone(),
        user,
        client,
        camera,
        stream,
        requested: Span {
            start_ms: q.start_ms,
            end_ms: q.end_ms,
        },
        file_name: file_name.clone(),
        sources,
        log,
        plan: plan.clone(),
    };
    let mut hash = Some(Context::new(&SHA256));
    let mut sent = 0u64;
    let tap_state = state.clone();
    let tap: Tap = Box::new(move |chunk| match chunk {
        Some(bytes) => {
            if let Some(h) = hash.as_mut() {
                h.update(bytes);
            }
            sent += bytes.len() as u64;
        }
        None => {
            let Some(h) = hash.take() else { return };
            let sha256 = base::hex::encode(h.finish().as_ref());
            let p = &pending;
            let detail = format!("id {} {sent} bytes SHA-256 {sha256}", p.id);
            match finish(&tap_state, p, sent, sha256) {
                Ok(()) => audit(&tap_state, "export_done", &p.user, &p.client, true, &detail),
                Err(e) => audit(
                    &tap_state,
                    "export_failed",
                    &p.user,
                    &p.client,
                    false,
                    &format!("{detail}: {e}"),
                ),
            }
        }
    });
    let mut r = HttpResponse::Ok();
    plan_headers(&mut r, &plan);
    r.insert_header((
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{file_name}\""),
    ))
    .insert_header(("X-Export-Id", id.clone()))
    .insert_header(("X-Manifest", format!("/api/exports/{id}/manifest")));
    Ok(r.no_chunking(total).streaming(stream_body(
        plan,
        ByteRange {
            first: 0,
            last: total - 1,
        },
        Some(tap),
    )))
}

/// `GET /api/exports/{id}/manifest`: the manifest of a finished export.
pub async fn manifest(
    state: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authed.require(Role::Operator)?;
    let id = id.into_inner();
    if id.len() != 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ApiError::bad_request(
            "an export id is 32 lower-case hex digits",
        ));
    }
    let path = state.state_dir.join(EXPORTS_DIR).join(format!("{id}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.manifest.json\""),
            ))
            .body(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found(
            "no such export, or its file has not been sent completely yet",
        )),
        Err(e) => Err(ApiError::internal(format!("{}: {e}", path.display()))),
    }
}
