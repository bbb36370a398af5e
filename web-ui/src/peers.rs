//! The cluster's viewers as the page sees them: every node's name, role and `web_url` (its origin, from
//! the cluster file), the Content-Security-Policy that lets the page reach them, and CORS for requests
//! from another node's page: only those origins, only the headers the page sends, never credentials
//! (a request from another node's page authenticates with `Authorization: Bearer`, not the cookie).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use cluster_config::ClusterConfig;
use serde::Serialize;

/// One node's viewer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerNode {
    pub name: String,
    pub role: &'static str,
    /// Its origin (`https://host:port`), or `None` when the cluster file does not give one.
    pub web_url: Option<String>,
}

/// Every node's viewer, in the cluster file's order.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub nodes: Vec<PeerNode>,
}

/// How long a browser may keep a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE_S: &str = "600";

impl Peers {
    pub fn from_cluster(cluster: &ClusterConfig) -> Peers {
        Peers {
            nodes: cluster
                .nodes
                .iter()
                .map(|n| PeerNode {
                    name: n.name.clone(),
                    role: n.role.as_str(),
                    web_url: n.web_url.clone(),
                })
                .collect(),
        }
    }

    /// Whether `origin` is one of the cluster's viewers.
    pub fn allows(&self, origin: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.web_url.as_deref() == Some(origin))
    }

    /// The page's Content-Security-Policy: its own origin and the other viewers for `fetch`.
    pub fn csp(&self) -> String {
        let mut connect = String::from("'self'");
        for url in self.nodes.iter().filter_map(|n| n.web_url.as_deref()) {
            connect.push(' ');
            connect.push_str(url);
        }
        format!(
            "default-src 'self'; connect-src {connect}; media-src 'self' blob:; frame-ancestors 'none'"
        )
    }
}

/// CORS for the API: a request whose `Origin` is another of the cluster's viewers gets
/// `Access-Control-Allow-Origin` with that origin (no `Allow-Credentials`: cookies are not sent across
/// origins); its preflight (`OPTIONS /api/…`) is answered here. Any other origin gets no CORS header,
/// so the browser keeps the answer from its page.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = match (
        &origin,
        req.app_data::<web::Data<crate::server::AppState>>(),
    ) {
        (Some(o), Some(state)) => state.peers.allows(o),
        _ => false,
    };
    let api = req.path().starts_with("/api/");
    if req.method() == Method::OPTIONS && api {
        let mut answer = HttpResponse::NoContent();
        if let (true, Some(o)) = (allowed, &origin) {
            answer
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o.as_str()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "authorization, content-type, x-csrf-token",
                ))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_S));
        }
        answer.insert_header((header::VARY, "Origin"));
        return Ok(req.into_response(answer.finish()).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    if let (true, true, Some(o)) = (api, allowed, origin) {
        if let Ok(v) = HeaderValue::from_str(&o) {
            let h = res.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                // Playback's and exports' headers, so that a page on another node's origin reads them.
                HeaderValue::from_static(
                    "retry-after, content-range, x-media-start-ms, x-media-end-ms, x-frames, \
                     x-stop, x-next-start-ms, x-export-id, x-manifest",
                ),
            );
        }
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cluster_viewers_are_allowed_and_listed_in_the_policy() {
        let peers = Peers {
            nodes: vec![
                PeerNode {
                    name: "a".into(),
                    role: "primary",
                    web_url: Some("https://10.0.0.1:8443".into()),
                },
                PeerNode {
                    name: "b".into(),
                    role: "standby",
                    web_url: None,
                },
            ],
        };
        assert!(peers.allows("https://10.0.0.1:8443"));
        assert!(!peers.allows("https://10.0.0.1:8444"));
        assert!(!peers.allows("http://10.0.0.1:8443"));
        assert!(!peers.allows("null"));
        assert_eq!(
            peers.csp(),
            "default-src 'self'; connect-src 'self' https://10.0.0.1:8443; media-src 'self' blob:; frame-ancestors 'none'"
        );
    }
}
