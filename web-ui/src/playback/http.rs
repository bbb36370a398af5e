//! `GET /api/streams/{camera}/{stream}/play.mp4?start_ms=&end_ms=`: a [`Plan`] answered with HTTP
//! range requests (200 with the whole file, 206 with `Content-Range`, 416), its body read on a
//! blocking thread fragment by fragment, so the first byte goes out as soon as the plan is made.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Deserialize;

use super::body::{self, ByteRange, RangeRequest};
use super::{Mode, Plan, PlanError, Stop};
use crate::api::MAX_RANGE_MS;
use crate::auth::Authed;
use crate::error::ApiError;
use crate::server::AppState;

#[derive(Deserialize)]
pub struct PlayQuery {
    start_ms: i64,
    end_ms: i64,
}

/// Checks the range and plans it on a blocking thread.
pub async fn plan_request(
    state: &AppState,
    camera: String,
    stream: String,
    start_ms: i64,
    end_ms: i64,
    mode: Mode,
) -> Result<Plan, ApiError> {
    if end_ms <= start_ms || end_ms - start_ms > MAX_RANGE_MS {
        return Err(ApiError::bad_request(format!(
            "start_ms must be before end_ms, at most {MAX_RANGE_MS} ms apart"
        )));
    }
    let data_dir = state.data_dir.clone();
    let clock = state.clock.clone();
    web::block(move || {
        let reader = store::Reader::open(&data_dir, clock)?;
        super::plan(&reader, &camera, &stream, start_ms, end_ms, mode)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        PlanError::NoStream(_) | PlanError::Empty => ApiError::not_found(e.to_string()),
        PlanError::Storage(e) => ApiError::unavailable(format!("catalog: {e}")),
        PlanError::File { .. } => ApiError::internal(e.to_string()),
    })
}

/// The plan's headers: where its media starts and ends in wall time, its frames, why it stops.
pub fn plan_headers(r: &mut HttpResponseBuilder, plan: &Plan) {
    r.insert_header((header::CONTENT_TYPE, "video/mp4"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Media-Start-Ms", plan.start_ms.to_string()))
        .insert_header(("X-Media-End-Ms", plan.end_ms.to_string()))
        .insert_header(("X-Frames", plan.frames.to_string()));
    match plan.stop {
        Stop::End => {}
        Stop::Gap { next_ms, .. } => {
            r.insert_header(("X-Stop", "gap"))
                .insert_header(("X-Next-Start-Ms", next_ms.to_string()));
        }
        Stop::CodecChange { next_ms } => {
            r.insert_header(("X-Stop", "codec_change"))
                .insert_header(("X-Next-Start-Ms", next_ms.to_string()));
        }
    }
}

/// Called with every chunk as it goes out, then once with `None` if the whole range went out.
pub type Tap = Box<dyn FnMut(Option<&[u8]>) + Send>;

/// A streaming body of `range` of `plan`, read on a blocking thread.
pub fn stream_body(
    plan: Arc<Plan>,
    range: ByteRange,
    mut tap: Option<Tap>,
) -> impl futures::Stream<Item = Result<web::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut sink = |chunk: Vec<u8>| {
            if let Some(t) = tap.as_mut() {
                t(Some(&chunk));
            }
            tx.blocking_send(Ok(web::Bytes::from(chunk))).is_ok()
        };
        let mut complete = true;
        let mut sink_all = |chunk: Vec<u8>| {
            let sent = sink(chunk);
            complete &= sent;
            sent
        };
        match body::produce(&plan, range, &mut sink_all) {
            Ok(()) if complete => {
                if let Some(t) = tap.as_mut() {
                    t(None);
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "playback body");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// `play.mp4`: see the module documentation.
pub async fn play(
    req: HttpRequest,
    state: web::Data<AppState>,
    _: Authed,
    path: web::Path<(String, String)>,
    q: web::Query<PlayQuery>,
) -> Result<HttpResponse, ApiError> {
    let (camera, stream) = path.into_inner();
    let plan = plan_request(&state, camera, stream, q.start_ms, q.end_ms, Mode::Playback).await?;
    let total = plan.total_len;
    let asked = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, range) = match body::parse_range(asked, total) {
        RangeRequest::Whole => (
            StatusCode::OK,
            ByteRange {
                first: 0,
                last: total - 1,
            },
        ),
        RangeRequest::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeRequest::Unsatisfiable => {
            return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{total}")))
                .json(serde_json::json!({"error": {"code": "bad_range",
                    "message": format!("the range asks for none of the {total} bytes")}})));
        }
    };
    let mut r = HttpResponse::build(status);
    plan_headers(&mut r, &plan);
    if status == StatusCode::PARTIAL_CONTENT {
        r.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{total}", range.first, range.last),
        ));
    }
    let len = range.last - range.first + 1;
    Ok(r.no_chunking(len)
        .streaming(stream_body(Arc::new(plan), range, None)))
}
