//! Request extractors: the bearer-key [`Auth`] and wrappers around axum's
//! `Json`, `Query` and `Path` whose rejections become [`Error`]s, so that bad
//! input always gets the documented error shape instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::Error;
use crate::store::TenantId;
use crate::store::tenants::{Principal, Role};

/// The authenticated caller. Handlers ask it for the access they need; the
/// returned [`TenantId`] is what scopes every store call.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(Error::Unauthorized)?;
        Auth::from_header(state, header).await
    }
}

impl Auth {
    /// The caller of an `Authorization: Bearer <key>` header value.
    pub async fn from_header(state: &AppState, header: &axum::http::HeaderValue) -> Result<Auth, Error> {
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthorized)?;
        let principal = state.store.authenticate(token).await?.ok_or(Error::Unauthorized)?;
        Ok(Auth(principal))
    }
}

impl Auth {
    fn tenant_at(&self, level: u8, what: &str) -> Result<TenantId, Error> {
        match &self.0.tenant {
            Some(tenant) if self.0.role.tenant_level() >= level => Ok(tenant.clone()),
            Some(_) => Err(Error::Forbidden(format!("this key's role may not {what}"))),
            None => Err(Error::Forbidden("platform admin keys cannot act on tenant data".into())),
        }
    }
    /// Any tenant key.
    pub fn read(&self) -> Result<TenantId, Error> {
        self.tenant_at(Role::TenantRead.tenant_level(), "read")
    }
    /// Tenant write or admin keys.
    pub fn write(&self) -> Result<TenantId, Error> {
        self.tenant_at(Role::TenantWrite.tenant_level(), "write")
    }
    /// Tenant admin keys only.
    pub fn admin(&self) -> Result<TenantId, Error> {
        self.tenant_at(Role::TenantAdmin.tenant_level(), "administer this tenant")
    }
    /// Platform admin keys only.
    pub fn platform(&self) -> Result<(), Error> {
        match self.0.role {
            Role::PlatformAdmin => Ok(()),
            _ => Err(Error::Forbidden("requires a platform admin key".into())),
        }
    }
}

/// `Json<T>` whose rejections are [`Error`]s: 400 bad syntax, 415 wrong
/// content type, 413 over the body limit, 422 wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(e) => Error::invalid("body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => Error::bad_request("invalid_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType,
        JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Error::PayloadTooLarge {
                limit: super::MAX_BODY_BYTES,
            }
        }
        other => Error::bad_request("invalid_body", other.body_text()),
    }
}

impl<T> axum::response::IntoResponse for Json<T>
where
    T: serde::Serialize,
{
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query<T>` with a 400 `invalid_query` rejection.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| Error::bad_request("invalid_query", e.body_text()))
    }
}

/// `Path<T>` with a 400 `invalid_path` rejection.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e: PathRejection| Error::bad_request("invalid_path", e.body_text()))
    }
}
