//! `/api/v1/accounts` and `/api/v1/tokens`: administrator accounts and API tokens, for
//! `server:admin`, which gives only rights its caller holds ([`crate::rights::check_grant`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use onboard_protocol::admin::{
    AccountView, CreatedToken, EditAccount, NewAccount, NewToken, Page, TokenView,
};

use super::{Admin, Body, Params, PathParam, bounded, page};
use crate::http::{ApiError, Shared};
use crate::rights::Operation;

/// The account and token routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/accounts", get(list).post(create))
        .route(
            "/api/v1/accounts/{name}",
            get(one).patch(edit).delete(remove),
        )
        .route("/api/v1/tokens", get(tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke))
}

/// Paging of the account list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// The most accounts to return (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    limit: Option<usize>,
    /// Start after this name (the previous page's `next_after`).
    #[param(max_length = 64)]
    after: Option<String>,
}

/// Filter and paging of the token list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// Only the tokens of this account.
    #[param(max_length = 64)]
    account: Option<String>,
    /// The most tokens to return (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    limit: Option<usize>,
    /// Start after this token ID (the previous page's `next_after`).
    #[param(max_length = 64)]
    after: Option<String>,
}

/// Lists accounts (never a password or its hash).
#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts", params(AccountQuery),
    responses((status = 200, description = "One page of accounts", body = Page<AccountView, String>)))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Params(query): Params<AccountQuery>,
) -> Result<axum::Json<Page<AccountView, String>>, ApiError> {
    admin.may(Operation::ManageAccounts)?;
    bounded("after", query.after.as_ref(), 64)?;
    let listed = shared
        .stub
        .accounts()
        .list(&page(query.limit, query.after)?)
        .await?;
    Ok(axum::Json(listed))
}

/// Creates an account: a name, a password of at least 12 characters (stored as argon2id), and at
/// least one right, each held by the caller (else 403).
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = NewAccount,
    responses((status = 201, description = "The account", body = AccountView),
        (status = 409, description = "The name is taken or reserved", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<NewAccount>,
) -> Result<(StatusCode, axum::Json<AccountView>), ApiError> {
    admin.may(Operation::ManageAccounts)?;
    let created = shared
        .stub
        .accounts()
        .create(request, &admin.granter())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// One account.
#[utoipa::path(get, path = "/api/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path, max_length = 64, description = "The account's name")),
    responses((status = 200, description = "The account", body = AccountView),
        (status = 404, description = "No such account", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn one(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(name): PathParam<String>,
) -> Result<axum::Json<AccountView>, ApiError> {
    admin.may(Operation::ManageAccounts)?;
    Ok(axum::Json(shared.stub.accounts().get(&name).await?))
}

/// Changes an account's rights or password. Its sessions end; its tokens keep only the rights it
/// still holds, and end with a new password. The caller may add only rights it holds, and set
/// the password only of an account whose every right it holds (else 403).
#[utoipa::path(patch, path = "/api/v1/accounts/{name}", tag = "accounts", request_body = EditAccount,
    params(("name" = String, Path, max_length = 64, description = "The account's name")),
    responses((status = 200, description = "The account", body = AccountView),
        (status = 404, description = "No such account", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the last account with server:admin, and would lose it", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn edit(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(name): PathParam<String>,
    Body(request): Body<EditAccount>,
) -> Result<axum::Json<AccountView>, ApiError> {
    admin.may(Operation::ManageAccounts)?;
    let edited = shared
        .stub
        .accounts()
        .edit(&name, request, &admin.granter())
        .await?;
    Ok(axum::Json(edited))
}

/// Deletes an account with its tokens and sessions.
#[utoipa::path(delete, path = "/api/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path, max_length = 64, description = "The account's name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such account", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the last account with server:admin", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn remove(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(name): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::ManageAccounts)?;
    shared.stub.accounts().delete(&name, &admin.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists API tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(TokenQuery),
    responses((status = 200, description = "One page of tokens", body = Page<TokenView, String>)))]
pub async fn tokens(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Params(query): Params<TokenQuery>,
) -> Result<axum::Json<Page<TokenView, String>>, ApiError> {
    admin.may(Operation::ManageAccounts)?;
    bounded("account", query.account.as_ref(), 64)?;
    bounded("after", query.after.as_ref(), 64)?;
    let listed = shared
        .stub
        .accounts()
        .list_tokens(query.account.as_deref(), &page(query.limit, query.after)?)
        .await?;
    Ok(axum::Json(listed))
}

/// Creates an API token for an account, with a subset of its rights, each held by the caller
/// (else 403), and an optional expiry. The answer is the only time the token is shown; the server
/// keeps its SHA-256.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "The token, shown once", body = CreatedToken),
        (status = 404, description = "No such account", body = onboard_protocol::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A right the account does not hold", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn create_token(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    Body(request): Body<NewToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    admin.may(Operation::ManageAccounts)?;
    let created = shared
        .stub
        .accounts()
        .create_token(request, &admin.granter())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Revokes an API token at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, max_length = 64, description = "The token's public ID")),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = onboard_protocol::Problem, content_type = "application/problem+json")))]
pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    admin: Admin,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    admin.may(Operation::ManageAccounts)?;
    shared
        .stub
        .accounts()
        .revoke_token(&id, &admin.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
