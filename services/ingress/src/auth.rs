//! Authentication middleware for `/api/v1`: resolves `Authorization: Bearer <key>` to a [`Principal`]
//! or answers 401. Handlers then check the role they need with [`Principal::require`] (403).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use guarantor_domain::Role;

use crate::api_keys::{self, Principal};
use crate::error::ApiError;
use crate::AppState;

pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    let principal = match state.keys.get(presented) {
        Some(cached) => cached,
        None => {
            let found = api_keys::authenticate(&state.pool, presented)
                .await
                .map_err(ApiError::database)?;
            state.keys.put(presented, found);
            found
        }
    }
    .ok_or_else(ApiError::unauthorized)?;
    tracing::Span::current().record("tenant_id", principal.tenant_id.get());
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

impl Principal {
    /// 403 unless the key's role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            Err(
                ApiError::forbidden(format!("this action needs a key with role {}", allowed.join(" or ")))
                    .with_details(serde_json::json!({ "role": self.role, "allowed_roles": allowed })),
            )
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .copied()
            .ok_or_else(ApiError::unauthorized)
    }
}
