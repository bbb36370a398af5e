//! The cluster routes of the API (`docs/api.md`): the viewers of every node (for the page's failover),
//! this node's view of the cluster, its alarms and their acknowledgement, and the admin actions that go
//! to the arbiter's operator socket (planned handover of a stream, drain of every stream held here).
//! Admin actions need the admin role and the CSRF token (`Authed`), and every attempt is audit-logged.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::alarms::{self, Alarm};
use crate::arbiter::{self, ArbiterError};
use crate::audit::AuditEntry;
use crate::auth::Authed;
use crate::cluster;
use crate::error::ApiError;
use crate::server::AppState;
use crate::users::Role;

/// What this node's programs say: the arbiter's and sync agent's status documents (absent or stale
/// ones left out, with why in `problems`) and the recorder's stream status.
pub(crate) struct Sources {
    pub arbiter: Option<Value>,
    pub sync: Option<Value>,
    /// `None` when the recorder did not answer.
    pub recorder: Option<Vec<Value>>,
    pub problems: Vec<String>,
}

pub(crate) async fn sources(state: &AppState) -> Sources {
    let now = state.clock.now_utc_ms();
    let mut problems = Vec::new();
    let mut read = |file: &str, key: &str| {
        cluster::read_status(&state.data_dir, file, key, now).unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let arbiter = read(store::layout::ARBITER_STATUS_FILE, "updated_ms");
    let sync = read(store::layout::SYNC_STATUS_FILE, "time_ms");
    let recorder = match state.control.status().await {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(format!("recorder: {e}"));
            None
        }
    };
    Sources {
        arbiter,
        sync,
        recorder,
        problems,
    }
}

fn node_alarms(state: &AppState, s: &Sources) -> Result<Vec<Alarm>, ApiError> {
    let mut list = alarms::collect(
        &state.node,
        s.sync.as_ref(),
        s.arbiter.as_ref(),
        s.recorder.as_deref().unwrap_or_default(),
    );
    state
        .acks
        .apply(&mut list)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(list)
}

/// `GET /api/nodes`: every node's viewer.
pub async fn nodes(state: web::Data<AppState>, _: Authed) -> HttpResponse {
    HttpResponse::Ok().json(json!({"node": state.node, "nodes": state.peers.nodes}))
}

/// `GET /api/alarms`: this node's alarms (cheap: no catalog), for the banner.
pub async fn alarms(state: web::Data<AppState>, _: Authed) -> Result<HttpResponse, ApiError> {
    let s = sources(&state).await;
    let list = node_alarms(&state, &s)?;
    Ok(
        HttpResponse::Ok().json(json!({"node": state.node, "alarms": list,
        "problems": s.problems})),
    )
}

/// `GET /api/cluster`: this node's view of the cluster.
pub async fn cluster(state: web::Data<AppState>, _: Authed) -> Result<HttpResponse, ApiError> {
    let mut s = sources(&state).await;
    let alarms = node_alarms(&state, &s)?;
    let (data_dir, clock) = (state.data_dir.clone(), state.clock.clone());
    let (storage, disk) = web::block(move || {
        let disk = cluster::disk(&data_dir);
        (cluster::storage(&data_dir, clock), disk)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let storage = storage.unwrap_or_else(|e| {
        s.problems.push(format!("catalog: {e}"));
        Default::default()
    });
    let view = cluster::view(cluster::Inputs {
        cluster: &state.cluster,
        node: &state.node,
        now_ms: state.clock.now_utc_ms(),
        arbiter: s.arbiter.as_ref(),
        sync: s.sync.as_ref(),
        recorder: s.recorder.as_deref().unwrap_or_default(),
        storage: &storage,
        disk,
        alarms,
        problems: s.problems,
    });
    Ok(HttpResponse::Ok().json(view))
}

fn client(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

/// Audits an admin action (refused for the role, failed or done) and checks the role.
fn admin_action(
    req: &HttpRequest,
    state: &AppState,
    authed: &Authed,
    event: &str,
    detail: &str,
) -> Result<(), ApiError> {
    let allowed = authed.require(Role::Admin);
    if let Err(e) = &allowed {
        audit(
            req,
            state,
            authed,
            event,
            false,
            &format!("{detail}: {}", e.message),
        );
    }
    allowed
}

fn audit(
    req: &HttpRequest,
    state: &AppState,
    authed: &Authed,
    event: &str,
    ok: bool,
    detail: &str,
) {
    state.audit.record(&AuditEntry {
        time_ms: state.clock.now_utc_ms(),
        event,
        user: &authed.0.user,
        client: &client(req),
        ok,
        detail,
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    id: String,
}

/// `POST /api/alarms/ack` (admin): acknowledges one of this node's current alarms.
pub async fn ack(
    req: HttpRequest,
    state: web::Data<AppState>,
    authed: Authed,
    body: web::Json<AckRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = body.into_inner().id;
    admin_action(&req, &state, &authed, "alarm_ack", &id)?;
    let s = sources(&state).await;
    let known = alarms::collect(
        &state.node,
        s.sync.as_ref(),
        s.arbiter.as_ref(),
        s.recorder.as_deref().unwrap_or_default(),
    )
    .iter()
    .any(|a| a.id == id);
    if !known {
        audit(
            &req,
            &state,
            &authed,
            "alarm_ack",
            false,
            &format!("{id}: no such alarm"),
        );
        return Err(ApiError::not_found(format!(
            "no current alarm {id:?} on node {}",
            state.node
        )));
    }
    let ack = state
        .acks
        .acknowledge(&id, &authed.0.user, state.clock.now_utc_ms())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    audit(&req, &state, &authed, "alarm_ack", true, &id);
    Ok(HttpResponse::Ok().json(json!({"id": id, "acknowledged": ack})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverRequest {
    stream: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    to: String,
}

fn check_node(state: &AppState, to: &str) -> Result<(), ApiError> {
    if state.cluster.nodes.iter().any(|n| n.name == to) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "no node {to:?} in the cluster file"
        )))
    }
}

/// Sends one request to this node's arbiter and audits the outcome.
async fn to_arbiter(
    req: &HttpRequest,
    state: &AppState,
    authed: &Authed,
    event: &str,
    detail: &str,
    request: Value,
) -> Result<HttpResponse, ApiError> {
    match arbiter::request(&state.data_dir, &request).await {
        Ok(result) => {
            audit(req, state, authed, event, true, detail);
            Ok(HttpResponse::Ok().json(json!({"result": result})))
        }
        Err(e) => {
            audit(req, state, authed, event, false, &format!("{detail}: {e}"));
            Err(match e {
                ArbiterError::Refused(m) => ApiError::new(StatusCode::CONFLICT, "refused", m),
                other => ApiError::unavailable(other.to_string()),
            })
        }
    }
}

/// `POST /api/cluster/handover` (admin): hands a stream held here to node `to`.
pub async fn handover(
    req: HttpRequest,
    state: web::Data<AppState>,
    authed: Authed,
    body: web::Json<HandoverRequest>,
) -> Result<HttpResponse, ApiError> {
    let HandoverRequest { stream, to } = body.into_inner();
    let detail = format!("{stream} to {to}");
    admin_action(&req, &state, &authed, "handover", &detail)?;
    check_node(&state, &to)?;
    let request = json!({"op": "handover", "stream": stream, "to": to});
    to_arbiter(&req, &state, &authed, "handover", &detail, request).await
}

/// `POST /api/cluster/drain` (admin): hands every stream held here to node `to`.
pub async fn drain(
    req: HttpRequest,
    state: web::Data<AppState>,
    authed: Authed,
    body: web::Json<DrainRequest>,
) -> Result<HttpResponse, ApiError> {
    let DrainRequest { to } = body.into_inner();
    let detail = format!("every stream of {} to {to}", state.node);
    admin_action(&req, &state, &authed, "drain", &detail)?;
    check_node(&state, &to)?;
    let request = json!({"op": "handover", "to": to});
    to_arbiter(&req, &state, &authed, "drain", &detail, request).await
}
