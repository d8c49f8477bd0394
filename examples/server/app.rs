//! The server's routes, handlers and state: shared by `main.rs` and tests/server.rs.

use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strata::asynch::AsyncTracker;
use strata::domain::{now_millis, parse_cents, Cursor, Expense, ExpenseTracker, User};
use strata::{AsyncDb, Error};

/// What every handler shares: the tracker for async callers, whose repositories answer cache
/// hits without leaving the handler's task and whose operations run on strata's threads.
#[derive(Clone)]
pub struct State {
    pub tracker: AsyncTracker,
}

impl State {
    /// Opens (creating and migrating if needed) the tracker's database at `path`.
    pub fn open(path: &Path) -> strata::Result<State> {
        let tracker = ExpenseTracker::open(path)?;
        let adb = AsyncDb::new(tracker.db().clone());
        Ok(State {
            tracker: AsyncTracker::new(adb, tracker),
        })
    }

    /// The async handle, to close at shutdown.
    pub fn adb(&self) -> &AsyncDb {
        self.tracker.adb()
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/expenses", get(list_expenses))
        .route("/users/{id}/metrics/{date}", get(daily_metrics))
        .route("/expenses", post(create_expense))
        .with_state(state)
}

/// A strata error as an HTTP answer: the client's mistakes are 4xx, the rest 5xx.
pub struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::InvalidValue { .. } => StatusCode::BAD_REQUEST,
            err if err.is_unique_violation() => StatusCode::CONFLICT,
            err if err.is_constraint() => StatusCode::UNPROCESSABLE_ENTITY,
            Error::QueueFull { .. } | Error::PoolTimeout { .. } | Error::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.0.to_string() });
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
pub struct NewUser {
    pub email: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct UserJson {
    pub id: i64,
    pub email: String,
    pub name: String,
}

impl From<&User> for UserJson {
    fn from(u: &User) -> Self {
        UserJson {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
        }
    }
}

async fn create_user(
    Shared(state): Shared<State>,
    Json(new): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<UserJson>)> {
    let user = User {
        id: 0,
        email: new.email,
        name: new.name,
        created_at: now_millis(),
    };
    let id = state.tracker.users.insert(user.clone()).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserJson::from(&User { id, ..user })),
    ))
}

async fn get_user(
    Shared(state): Shared<State>,
    UrlPath(id): UrlPath<i64>,
) -> ApiResult<Json<UserJson>> {
    match state.tracker.users.get(id).await? {
        Some(user) => Ok(Json(UserJson::from(&*user))),
        None => Err(Error::NotFound {
            table: "users",
            key: id.to_string(),
        }
        .into()),
    }
}

#[derive(Deserialize)]
pub struct NewExpense {
    pub user_id: i64,
    pub category_id: Option<i64>,
    /// Decimal text, e.g. "12.50".
    pub amount: String,
    pub description: String,
    /// YYYY-MM-DD.
    pub date: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct ExpenseJson {
    pub id: i64,
    pub user_id: i64,
    pub category_id: Option<i64>,
    pub amount_cents: i64,
    pub description: String,
    pub date: String,
}

impl From<&Expense> for ExpenseJson {
    fn from(e: &Expense) -> Self {
        ExpenseJson {
            id: e.id,
            user_id: e.user_id,
            category_id: e.category_id,
            amount_cents: e.amount_cents,
            description: e.description.clone(),
            date: e.expense_date.clone(),
        }
    }
}

async fn create_expense(
    Shared(state): Shared<State>,
    Json(new): Json<NewExpense>,
) -> ApiResult<(StatusCode, Json<ExpenseJson>)> {
    let expense = Expense {
        id: 0,
        user_id: new.user_id,
        category_id: new.category_id,
        amount_cents: parse_cents(&new.amount)?,
        description: new.description,
        expense_date: new.date,
        created_at: now_millis(),
    };
    let id = state.tracker.create_expense(expense.clone()).await?;
    Ok((
        StatusCode::CREATED,
        Json(ExpenseJson::from(&Expense { id, ..expense })),
    ))
}

#[derive(Deserialize)]
pub struct PageQuery {
    pub limit: Option<usize>,
    /// The `next` of the previous page, as `created_at:id`.
    pub after: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct PageJson {
    pub items: Vec<ExpenseJson>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

async fn list_expenses(
    Shared(state): Shared<State>,
    UrlPath(user_id): UrlPath<i64>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<PageJson>> {
    let after = page.after.as_deref().map(parse_cursor).transpose()?;
    let limit = page.limit.unwrap_or(20).min(500);
    let page = state.tracker.expenses_of(user_id, limit, after).await?;
    Ok(Json(PageJson {
        items: page.items.iter().map(ExpenseJson::from).collect(),
        next: page.next.map(|c| format!("{}:{}", c.created_at, c.id)),
    }))
}

fn parse_cursor(text: &str) -> strata::Result<Cursor> {
    let bad = || Error::InvalidValue {
        field: "after",
        value: text.to_owned(),
        reason: "expected created_at:id".into(),
    };
    let (created_at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok(Cursor {
        created_at: created_at.parse().map_err(|_| bad())?,
        id: id.parse().map_err(|_| bad())?,
    })
}

async fn daily_metrics(
    Shared(state): Shared<State>,
    UrlPath((user_id, date)): UrlPath<(i64, String)>,
) -> ApiResult<Json<strata::domain::DailyMetrics>> {
    let metrics = state.tracker.daily_metrics(user_id, date).await?;
    Ok(Json(metrics))
}
