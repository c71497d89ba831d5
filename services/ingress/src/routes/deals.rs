//! Deals: create, read, list, and the actions of the state machine. Every action is sent to the
//! ledger, which locks the deal and decides with the state machine table; the OpenAPI descriptions of
//! the actions are rendered from the same table.

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use guarantor_domain::deal::{actors_of, markdown_table, statuses_for};
use guarantor_domain::{Command, DealAction, DealId, DealStatus, DisputeOpening, NewDeal, RawAmount, Role, UserId};
use guarantor_store::views::{self, DealFilter, DealView};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::OpenApi;

use crate::api_keys::Principal;
use crate::dispatch;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ActingUser, ApiJson, IdPath, RequestMeta};
use crate::routes::validate;
use crate::AppState;

const LIST_LIMIT_DEFAULT: i64 = 50;
const LIST_LIMIT_MAX: i64 = 200;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateDeal {
    /// 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub title: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: String,
    /// Decimal string or JSON number, at most the currency's decimals; `price` is accepted too.
    #[serde(alias = "price")]
    #[schema(value_type = String, example = "12.50")]
    pub amount: RawAmount,
    /// Defaults to USDT.
    #[serde(default = "default_currency")]
    #[schema(example = "USDT")]
    pub currency: String,
    #[schema(minimum = 1)]
    pub customer_id: i64,
    #[schema(minimum = 1)]
    pub performer_id: i64,
    pub deadline_at: Option<DateTime<Utc>>,
}

fn default_currency() -> String {
    "USDT".to_owned()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OpenDispute {
    /// 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub title: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// Only deals in this status.
    pub status: Option<DealStatus>,
    /// Only deals where this user is the customer or the performer.
    #[param(minimum = 1)]
    pub user_id: Option<i64>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DealPage {
    pub items: Vec<DealView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Creates a deal between two users of the tenant; it starts in `created`.
#[utoipa::path(
    post,
    path = "/deal",
    tag = "deals",
    security(("api_key" = [])),
    request_body = CreateDeal,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes a retry return the first result")),
    responses(
        (status = 200, body = DealView, description = "The deal, with its `deal_id`"),
        (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson { raw, body }: ApiJson<CreateDeal>,
) -> Result<Response, ApiError> {
    validate::text("title", &body.title, 1, 128)?;
    validate::text("description", &body.description, 0, 10_000)?;
    let currency = validate::currency("currency", &body.currency)?;
    let amount = validate::amount("amount", body.amount, currency, state.config.max_amount)?;
    let customer_id = validate::user_id("customer_id", body.customer_id)?;
    let performer_id = validate::user_id("performer_id", body.performer_id)?;
    if customer_id == performer_id {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "same_customer_and_performer",
            "the customer and the performer must differ",
        ));
    }
    principal.require(&[Role::Platform])?;
    let command = Command::CreateDeal(NewDeal {
        title: body.title,
        description: body.description,
        amount: amount.value(),
        currency,
        customer_id,
        performer_id,
        deadline_at: body.deadline_at,
    });
    dispatch::execute(&state, &principal, &meta, command, &raw).await
}

/// A deal of the tenant, with its dispute if any.
#[utoipa::path(
    get,
    path = "/deal/{deal_id}",
    tag = "deals",
    security(("api_key" = [])),
    params(("deal_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = DealView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    IdPath(id): IdPath<DealId>,
) -> Result<Json<DealView>, ApiError> {
    let deal = views::deal(&state.pool, principal.tenant_id, id)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| ApiError::not_found("deal"))?;
    principal.require(&[Role::Platform, Role::Arbiter])?;
    Ok(Json(deal))
}

/// The tenant's deals, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/deal",
    tag = "deals",
    security(("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, body = DealPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> Result<Json<DealPage>, ApiError> {
    let limit = params.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::validation(format!("limit must be 1 to {LIST_LIMIT_MAX}"))
            .with_details(serde_json::json!({ "field": "limit" })));
    }
    let before = params
        .cursor
        .as_deref()
        .map(|cursor| cursor.parse::<DealId>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor from a previous page"))?;
    let user_id: Option<UserId> = params.user_id.map(|id| validate::user_id("user_id", id)).transpose()?;
    principal.require(&[Role::Platform, Role::Arbiter])?;
    let filter = DealFilter {
        status: params.status,
        user_id,
        before,
        limit,
    };
    let items = views::deals(&state.pool, principal.tenant_id, filter)
        .await
        .map_err(ApiError::database)?;
    let next_cursor = (items.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| items.last().map(|deal| deal.deal_id.to_string()))
        .flatten();
    Ok(Json(DealPage { items, next_cursor }))
}

/// Sends a deal action to the ledger.
async fn act(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    id: DealId,
    action: DealAction,
    acting_user: Option<UserId>,
    dispute: Option<(DisputeOpening, Value)>,
) -> Result<Response, ApiError> {
    let (dispute, raw) = match dispute {
        Some((opening, raw)) => (Some(opening), raw),
        None => (None, Value::Null),
    };
    let command = Command::ActOnDeal {
        deal_id: id,
        action,
        acting_user,
        dispute,
    };
    dispatch::execute(state, principal, meta, command, &raw).await
}

macro_rules! party_action {
    ($name:ident, $action:expr, $path:literal, $summary:literal, $ok:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            method(get, post),
            path = $path,
            tag = "deals",
            security(("api_key" = [])),
            params(
                ("deal_id" = i64, Path, minimum = 1),
                ("Acting-User" = i64, Header, minimum = 1, description = "The deal party acting"),
                ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "POST only: makes a retry return the first result")
            ),
            responses(
                (status = 200, description = $ok),
                (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
                (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)
            )
        )]
        pub async fn $name(
            State(state): State<AppState>,
            principal: Principal,
            meta: RequestMeta,
            IdPath(id): IdPath<DealId>,
            ActingUser(user): ActingUser,
        ) -> Result<Response, ApiError> {
            act(&state, &principal, &meta, id, $action, Some(user), None).await
        }
    };
}

party_action!(
    deny,
    DealAction::Deny,
    "/deal/{deal_id}/deny",
    "The performer declines the deal.",
    "Empty body"
);
party_action!(
    confirm,
    DealAction::Confirm,
    "/deal/{deal_id}/confirm",
    "The performer agrees; the money is held if the customer's balance covers it.",
    "The deal (DealView)"
);
party_action!(
    cancel,
    DealAction::Cancel,
    "/deal/{deal_id}/cancel",
    "The customer cancels the deal before it is funded.",
    "The deal (DealView)"
);
party_action!(
    close,
    DealAction::Close,
    "/deal/{deal_id}/close",
    "The customer accepts the work; the money goes to the performer.",
    "The deal (DealView)"
);

/// A party opens a dispute on a funded deal.
#[utoipa::path(
    post,
    path = "/deal/{deal_id}/dispute",
    tag = "deals",
    security(("api_key" = [])),
    request_body = OpenDispute,
    params(
        ("deal_id" = i64, Path, minimum = 1),
        ("Acting-User" = i64, Header, minimum = 1, description = "The deal party acting"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes a retry return the first result")
    ),
    responses(
        (status = 200, body = DealView),
        (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn dispute(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    IdPath(id): IdPath<DealId>,
    ActingUser(user): ActingUser,
    ApiJson { raw, body }: ApiJson<OpenDispute>,
) -> Result<Response, ApiError> {
    validate::text("title", &body.title, 1, 128)?;
    validate::text("description", &body.description, 0, 10_000)?;
    let opening = DisputeOpening {
        title: body.title,
        description: body.description,
    };
    act(
        &state,
        &principal,
        &meta,
        id,
        DealAction::Dispute,
        Some(user),
        Some((opening, raw)),
    )
    .await
}

macro_rules! arbiter_action {
    ($name:ident, $action:expr, $path:literal, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            method(get, post),
            path = $path,
            tag = "deals",
            security(("api_key" = [])),
            params(
                ("deal_id" = i64, Path, minimum = 1),
                ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "POST only: makes a retry return the first result")
            ),
            responses(
                (status = 200, body = DealView),
                (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
                (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)
            )
        )]
        pub async fn $name(
            State(state): State<AppState>,
            principal: Principal,
            meta: RequestMeta,
            IdPath(id): IdPath<DealId>,
        ) -> Result<Response, ApiError> {
            act(&state, &principal, &meta, id, $action, None, None).await
        }
    };
}

arbiter_action!(
    close_performer,
    DealAction::ClosePerformer,
    "/deal/{deal_id}/dispute/close_performer",
    "The arbiter resolves the dispute for the performer: the money goes to the performer."
);
arbiter_action!(
    close_preformer,
    DealAction::ClosePerformer,
    "/deal/{deal_id}/dispute/close_preformer",
    "The original brief's spelling of close_performer; the same action."
);
arbiter_action!(
    close_customer,
    DealAction::CloseCustomer,
    "/deal/{deal_id}/dispute/close_customer",
    "The arbiter resolves the dispute for the customer: the money returns to the customer."
);

/// Adds the state machine table to the deals tag, and to each action which statuses it is possible
/// from and who may take it.
pub fn document_state_machine(doc: &mut OpenApi) {
    let actions = [
        ("/deny", DealAction::Deny),
        ("/confirm", DealAction::Confirm),
        ("/cancel", DealAction::Cancel),
        ("/close", DealAction::Close),
        ("/dispute", DealAction::Dispute),
        ("/dispute/close_performer", DealAction::ClosePerformer),
        ("/dispute/close_preformer", DealAction::ClosePerformer),
        ("/dispute/close_customer", DealAction::CloseCustomer),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some((_, action)) = actions.iter().find(|(suffix, _)| path.ends_with(suffix)) else {
            continue;
        };
        let from: Vec<String> = statuses_for(*action).iter().map(|s| format!("`{s}`")).collect();
        let actors: Vec<&str> = actors_of(*action).iter().map(|a| a.as_str()).collect();
        let note = format!(
            "\n\nAllowed from {} by the {}; otherwise 409 `invalid_transition` (wrong status) or 403 (wrong party or role).",
            from.join(", "),
            actors.join(" or ")
        );
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            let description = operation.description.get_or_insert_with(String::new);
            description.push_str(&note);
        }
    }
    if let Some(tags) = doc.tags.as_mut() {
        if let Some(tag) = tags.iter_mut().find(|tag| tag.name == "deals") {
            tag.description = Some(format!("Deals and their state machine:\n\n{}", markdown_table()));
        }
    }
}
