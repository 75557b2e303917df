//! Request extractors: the bearer-key [`Auth`] and wrappers around axum's
//! `Json`, `Query` and `Path` whose rejections become [`Error`]s, so that bad
//! input always gets the documented error shape instead of axum's plain text.
//!
//! They also hold the API's rules for text at the edge, once for every
//! handler: a JSON body must be an object (serde would otherwise accept a
//! struct in its sequence form, `["id", "name"]`), and no string anywhere in
//! a body, query or path may contain NUL (PostgreSQL cannot store it in text,
//! and both backends must answer alike): 422 `validation_failed` with
//! `details.field` naming the field (`when.to_tier`, `items[2].sku`) or the
//! parameter.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod single_flight;

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
        // Shared with the token's other requests in flight (see
        // `extract/single_flight.rs`): a flood of one key costs one lookup.
        let principal = single_flight::authenticate(&state.store, token)
            .await?
            .ok_or(Error::Unauthorized)?;
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
/// content type, 413 over the body limit, 422 wrong shape, a body that is
/// not a JSON object, or a string holding NUL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        // Through a `Value` first, so the shape and text rules are checked
        // on the document as sent, before serde reads it into `T`.
        let value = match axum::Json::<Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if !value.is_object() {
            return Err(Error::invalid("body", "the body must be a JSON object"));
        }
        if let Some(field) = nul_in_json(&value) {
            return Err(nul_error(field));
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| Error::invalid("body", e.to_string()))
    }
}

/// The error for text holding NUL, naming where it was found.
fn nul_error(field: String) -> Error {
    Error::invalid(field, "must not contain the NUL character (U+0000)")
}

/// The path (`a.b[2].c`) of the first string or object key holding NUL.
/// Paths are only built on the way back up, so a clean body costs one walk.
fn nul_in_json(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(String::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in_json(item).map(|tail| format!("[{i}]{}", dotted(&tail)))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(key.replace('\0', "\\0"));
            }
            nul_in_json(item).map(|tail| format!("{key}{}", dotted(&tail)))
        }),
        _ => None,
    }
}

/// `tail` as the rest of a field path: `.name`, `[2]...`, or nothing.
fn dotted(tail: &str) -> String {
    if tail.is_empty() || tail.starts_with('[') {
        tail.to_string()
    } else {
        format!(".{tail}")
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

/// `Query<T>` with a 400 `invalid_query` rejection, and 422 for a
/// parameter holding NUL.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        check_query(&parts.uri)?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| Error::bad_request("invalid_query", e.body_text()))
    }
}

/// 422 when a query parameter's name or value holds NUL (checked before
/// the typed parse, whose own errors are 400).
fn check_query(uri: &axum::http::Uri) -> Result<(), Error> {
    if let Ok(axum::extract::Query(pairs)) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        && let Some((name, _)) = pairs.iter().find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(nul_error(name.replace('\0', "\\0")));
    }
    Ok(())
}

/// `Path<T>` with a 400 `invalid_path` rejection, and 422 for a parameter
/// holding NUL.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await
            && let Some((name, _)) = params.iter().find(|(_, value)| value.contains('\0'))
        {
            return Err(nul_error(name.to_string()));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e: PathRejection| Error::bad_request("invalid_path", e.body_text()))
    }
}

/// The raw request body (for providers' own formats), with the body-limit
/// rejection as a 413 [`Error`] instead of axum's plain text.
#[derive(Debug, Clone)]
pub struct RawBody(pub axum::body::Bytes);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge {
                        limit: super::MAX_BODY_BYTES,
                    }
                } else {
                    Error::bad_request("invalid_body", e.body_text())
                }
            })
    }
}
