//! The `Authed` extractor: a request's session (signed cookie or the same signed session as an
//! `Authorization: Bearer` token, unexpired, user still in the users file,
//! with the file's current role) and, for every method but GET and HEAD, its CSRF token. A handler that
//! takes `Authed` cannot be reached without both; `Authed::require` checks the role.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};

use crate::error::ApiError;
use crate::server::AppState;
use crate::session::{constant_time_eq, Session, COOKIE, CSRF_HEADER};
use crate::users::{Role, Users};

/// An authenticated request's session.
#[derive(Debug, Clone)]
pub struct Authed(pub Session);

impl Authed {
    /// Refuses users whose role is below `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role; {} is {}",
                role.as_str(),
                self.0.user,
                self.0.role.as_str()
            )))
        }
    }
}

fn authenticate(req: &HttpRequest) -> Result<Authed, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("no application state"))?;
    // The cookie on this node's own page; the same signed session as a bearer token from another
    // node's page after a failover (`docs/web.md`, client failover).
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let signed = match bearer {
        Some(token) => token,
        None => req
            .cookie(COOKIE)
            .ok_or_else(ApiError::unauthorized)?
            .value()
            .to_owned(),
    };
    let mut session = state
        .key
        .verify(&signed, state.clock.now_utc_ms())
        .ok_or_else(ApiError::unauthorized)?;
    let users = Users::load(&state.users_file).map_err(|e| ApiError::internal(e.to_string()))?;
    let user = users
        .users
        .get(&session.user)
        .ok_or_else(ApiError::unauthorized)?;
    session.role = user.role;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let token = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(token, &session.csrf) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token header (the token is in the login answer and /api/me)",
            ));
        }
    }
    Ok(Authed(session))
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Ready<Result<Authed, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}
