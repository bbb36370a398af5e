//! The JSON API (`docs/api.md`): login and logout, the session, cameras with their recorder status,
//! recordings, gaps, events and alarms of a stream over a time range, live fMP4, and the audit log
//! for admins.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::audit::AuditEntry;
use crate::auth::Authed;
use crate::cluster_api;
use crate::error::ApiError;
use crate::recordings;
use crate::server::AppState;
use crate::session::{Session, COOKIE};
use crate::timeline_alarms;
use crate::users::{Role, Users};

/// Longest time range one recordings request may cover: 31 days.
pub const MAX_RANGE_MS: i64 = 31 * 86_400_000;

/// Every API route. The router is built from this table (each entry's handler is chosen by an exhaustive
/// `match`), so a route cannot exist without being listed here, and the tests walk it to check that
/// every route but the public ones refuses a request without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Login,
    Logout,
    Me,
    Cameras,
    Recordings,
    Live,
    Audit,
    Nodes,
    Cluster,
    Alarms,
    AlarmAck,
    Handover,
    Drain,
    Play,
    Export,
    ExportManifest,
}

/// One API route: which, its method and path pattern, and whether it answers without a session.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub id: RouteId,
    pub method: &'static str,
    pub path: &'static str,
    pub public: bool,
}

const fn route(id: RouteId, method: &'static str, path: &'static str, public: bool) -> Route {
    Route {
        id,
        method,
        path,
        public,
    }
}

pub const ROUTES: &[Route] = &[
    route(RouteId::Login, "POST", "/api/login", true),
    route(RouteId::Logout, "POST", "/api/logout", false),
    route(RouteId::Me, "GET", "/api/me", false),
    route(RouteId::Cameras, "GET", "/api/cameras", false),
    route(
        RouteId::Recordings,
        "GET",
        "/api/streams/{camera}/{stream}/recordings",
        false,
    ),
    route(
        RouteId::Live,
        "GET",
        "/api/streams/{camera}/{stream}/live",
        false,
    ),
    route(RouteId::Audit, "GET", "/api/audit", false),
    route(RouteId::Nodes, "GET", "/api/nodes", false),
    route(RouteId::Cluster, "GET", "/api/cluster", false),
    route(RouteId::Alarms, "GET", "/api/alarms", false),
    route(RouteId::AlarmAck, "POST", "/api/alarms/ack", false),
    route(RouteId::Handover, "POST", "/api/cluster/handover", false),
    route(RouteId::Drain, "POST", "/api/cluster/drain", false),
    route(
        RouteId::Play,
        "GET",
        "/api/streams/{camera}/{stream}/play.mp4",
        false,
    ),
    route(
        RouteId::Export,
        "GET",
        "/api/streams/{camera}/{stream}/export.mp4",
        false,
    ),
    route(
        RouteId::ExportManifest,
        "GET",
        "/api/exports/{id}/manifest",
        false,
    ),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    for r in ROUTES {
        let method = match r.method {
            "POST" => web::post(),
            _ => web::get(),
        };
        let handler = match r.id {
            RouteId::Login => method.to(login),
            RouteId::Logout => method.to(logout),
            RouteId::Me => method.to(me),
            RouteId::Cameras => method.to(cameras),
            RouteId::Recordings => method.to(recordings),
            RouteId::Live => method.to(live),
            RouteId::Audit => method.to(audit),
            RouteId::Nodes => method.to(cluster_api::nodes),
            RouteId::Cluster => method.to(cluster_api::cluster),
            RouteId::Alarms => method.to(cluster_api::alarms),
            RouteId::AlarmAck => method.to(cluster_api::ack),
            RouteId::Handover => method.to(cluster_api::handover),
            RouteId::Drain => method.to(cluster_api::drain),
            RouteId::Play => method.to(crate::playback::http::play),
            RouteId::Export => method.to(crate::export::export),
            RouteId::ExportManifest => method.to(crate::export::manifest),
        };
        cfg.route(r.path, handler);
    }
}

fn client(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

#[derive(Deserialize)]
pub struct LoginRequest {
    user: String,
    password: String,
}

/// The session as the page sees it; `token` is the signed session for the `Authorization: Bearer`
/// header of requests to the other nodes' viewers (the cookie does not reach their origins).
fn session_answer(state: &AppState, s: &Session) -> serde_json::Value {
    json!({"user": s.user, "role": s.role, "csrf": s.csrf, "expires_ms": s.expires_ms,
        "token": state.key.sign(s)})
}

async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { user, password } = body.into_inner();
    let client = client(&req);
    let keys = [format!("client:{client}"), format!("user:{user}")];
    let audit = |event: &str, ok: bool, detail: &str| {
        state.audit.record(&AuditEntry {
            time_ms: state.clock.now_utc_ms(),
            event,
            user: &user,
            client: &client,
            ok,
            detail,
        })
    };
    for key in &keys {
        if let Err(wait) = state.limiter.check(key) {
            audit("login_refused", false, &format!("rate limited ({key})"));
            let secs = wait.as_secs().max(1);
            return Ok(HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
                .insert_header((header::RETRY_AFTER, secs.to_string()))
                .json(json!({"error": {"code": "rate_limited",
                    "message": format!("too many failed logins: try again in {secs} s")}})));
        }
    }
    let path = state.users_file.clone();
    let (name, pw) = (user.clone(), password);
    let role = web::block(move || Users::load(&path).map(|u| u.verify(&name, &pw)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(role) = role else {
        for key in &keys {
            state.limiter.failed(key);
        }
        audit("login_failed", false, "wrong user name or password");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong user name or password",
        ));
    };
    // Only the user name's failures are forgiven: a client that knows one password must not be able
    // to reset its address's count between guesses at other users.
    state.limiter.succeeded(&keys[1]);
    audit("login", true, role.as_str());
    let session = Session::new(
        &user,
        role,
        state.clock.now_utc_ms() + state.session_ttl_s as i64 * 1000,
    );
    let cookie = Cookie::build(COOKIE, state.key.sign(&session))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(state.session_ttl_s as i64))
        .finish();
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(session_answer(&state, &session)))
}

async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    authed: Authed,
) -> Result<HttpResponse, ApiError> {
    state.audit.record(&AuditEntry {
        time_ms: state.clock.now_utc_ms(),
        event: "logout",
        user: &authed.0.user,
        client: &client(&req),
        ok: true,
        detail: "",
    });
    let mut gone = Cookie::build(COOKIE, "")
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .finish();
    gone.make_removal();
    Ok(HttpResponse::Ok().cookie(gone).json(json!({})))
}

async fn me(state: web::Data<AppState>, authed: Authed) -> HttpResponse {
    let mut answer = session_answer(&state, &authed.0);
    answer["node"] = json!(state.node);
    HttpResponse::Ok().json(answer)
}

/// This node's cameras and streams, each with the recorder's status (`null` when the recorder does not
/// answer: `recorder_error` says why).
async fn cameras(state: web::Data<AppState>, _: Authed) -> HttpResponse {
    let (statuses, recorder_error) = match state.control.status().await {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let cameras: Vec<_> = state
        .cameras
        .iter()
        .map(|c| {
            let streams: Vec<_> = c
                .streams
                .iter()
                .map(|s| {
                    let kind = s.kind.as_str();
                    let status = statuses
                        .iter()
                        .find(|st| st["camera"] == json!(c.name) && st["stream"] == json!(kind))
                        .cloned();
                    json!({"stream": kind, "key": format!("{}/{kind}", c.name),
                        "record": s.record, "status": status})
                })
                .collect();
            json!({"name": c.name, "streams": streams})
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "node": state.node, "cameras": cameras, "recorder_error": recorder_error}))
}

#[derive(Deserialize)]
pub struct RangeQuery {
    start_ms: i64,
    end_ms: i64,
}

/// Segments and gaps of one stream over `[start_ms, end_ms)`, from the catalog (read-only).
async fn recordings(
    state: web::Data<AppState>,
    _: Authed,
    path: web::Path<(String, String)>,
    range: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (camera, stream) = path.into_inner();
    let RangeQuery { start_ms, end_ms } = range.into_inner();
    if end_ms <= start_ms || end_ms - start_ms > MAX_RANGE_MS {
        return Err(ApiError::bad_request(format!(
            "start_ms must be before end_ms, at most {MAX_RANGE_MS} ms apart"
        )));
    }
    let st = state.clone();
    let found = web::block(move || {
        let reader = store::Reader::open(&st.data_dir, st.clock.clone())?;
        let Some(mut answer) =
            recordings::recordings_json(&reader, &camera, &stream, start_ms, end_ms)?
        else {
            return Ok(None);
        };
        add_alarms(&st, &mut answer, &camera, &stream, start_ms, end_ms);
        Ok::<_, store::StorageError>(Some(answer))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::unavailable(format!("catalog: {e}")))?;
    found
        .map(|v| HttpResponse::Ok().json(v))
        .ok_or_else(|| ApiError::not_found("no such stream in the catalog"))
}

/// The recordings answer's `alarms`, `alarms_truncated` and `alarm_problems`: this node's alarms
/// that concern the stream over the range (`timeline_alarms`).
fn add_alarms(
    state: &AppState,
    answer: &mut serde_json::Value,
    camera: &str,
    stream: &str,
    start_ms: i64,
    end_ms: i64,
) {
    let mut problems = Vec::new();
    let acks = state.acks.all().unwrap_or_else(|e| {
        problems.push(e.to_string());
        Default::default()
    });
    let protects = state
        .cluster
        .nodes
        .iter()
        .find(|n| n.name == state.node)
        .map_or(&[][..], |n| n.protects.as_slice());
    let src = timeline_alarms::Sources {
        node: &state.node,
        protects,
        data_dir: &state.data_dir,
        state_dir: &state.state_dir,
    };
    let owner = state
        .cluster
        .cameras
        .iter()
        .find(|c| c.name == camera)
        .map(|c| c.node.as_str());
    let of = timeline_alarms::StreamRef {
        camera,
        stream,
        owner,
    };
    let (alarms, truncated) =
        timeline_alarms::alarms_of_stream(src, &acks, of, start_ms, end_ms, &mut problems);
    answer["alarms"] = json!(timeline_alarms::to_json(&state.node, &alarms, &acks));
    answer["alarms_truncated"] = json!(truncated);
    answer["alarm_problems"] = json!(problems);
}

/// Live fMP4 of one stream from the recorder's fan-out, as a chunked `video/mp4` body.
async fn live(
    state: web::Data<AppState>,
    _: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (camera, stream) = path.into_inner();
    let known = state
        .cameras
        .iter()
        .any(|c| c.name == camera && c.streams.iter().any(|s| s.kind.as_str() == stream));
    if !known {
        return Err(ApiError::not_found(format!(
            "no stream {camera}/{stream} on this node"
        )));
    }
    // The permit goes with the body: it is given back when the client goes and the body is dropped.
    let permit = state.live_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(format!(
            "{} live streams are playing, the most this viewer relays ([web] max_live_streams)",
            state.live_slots_total
        ))
    })?;
    let body = state
        .control
        .live(&format!("{camera}/{stream}"))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map(move |chunk| {
            let _held = &permit;
            chunk
        });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "video/mp4"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default = "default_audit_lines")]
    lines: usize,
}

fn default_audit_lines() -> usize {
    100
}

/// The last lines of the audit log (admins only).
async fn audit(
    state: web::Data<AppState>,
    authed: Authed,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    authed.require(Role::Admin)?;
    let lines = state
        .audit
        .tail(q.lines.min(10_000))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({"entries": lines})))
}
