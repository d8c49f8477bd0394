//! The example server's router (examples/server), driven in-process with tower's `oneshot`:
//! create a user, read it back, add expenses, page through them, daily metrics, and the
//! client errors (unknown user, bad amount, duplicate email, bad cursor).
#![cfg(feature = "tokio")]

#[allow(dead_code)]
#[path = "../examples/server/app.rs"]
mod app;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(uri);
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expense_tracker_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let state = app::State::open(&dir.path().join("server.db")).unwrap();
    let router = app::router(state.clone());

    let (status, user) = call(
        &router,
        "POST",
        "/users",
        Some(json!({"email": "ada@example.com", "name": "Ada"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["id"].as_i64().unwrap();
    let (status, again) = call(
        &router,
        "POST",
        "/users",
        Some(json!({"email": "ada@example.com", "name": "Ada 2"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    let (status, got) = call(&router, "GET", &format!("/users/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got,
        json!({"id": id, "email": "ada@example.com", "name": "Ada"})
    );
    let (status, _) = call(&router, "GET", "/users/999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for n in 0..5 {
        let body = json!({"user_id": id, "amount": format!("1{n}.50"), "description": format!("item {n}"), "date": "2026-01-02"});
        let (status, created) = call(&router, "POST", "/expenses", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["amount_cents"], json!(1050 + 100 * n));
    }
    let bad = json!({"user_id": id, "amount": "twelve", "description": "x", "date": "2026-01-02"});
    assert_eq!(
        call(&router, "POST", "/expenses", Some(bad)).await.0,
        StatusCode::BAD_REQUEST
    );
    let orphan =
        json!({"user_id": 999, "amount": "1.00", "description": "x", "date": "2026-01-02"});
    assert_eq!(
        call(&router, "POST", "/expenses", Some(orphan)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Pages of two, newest first, until no `next`.
    let mut seen = Vec::new();
    let mut uri = format!("/users/{id}/expenses?limit=2");
    loop {
        let (status, page) = call(&router, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["description"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/users/{id}/expenses?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["item 4", "item 3", "item 2", "item 1", "item 0"]);
    let (status, _) = call(
        &router,
        "GET",
        &format!("/users/{id}/expenses?after=nonsense"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, metrics) = call(
        &router,
        "GET",
        &format!("/users/{id}/metrics/2026-01-02"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    assert_eq!(metrics["count"], json!(5));
    assert_eq!(
        metrics["total_cents"],
        json!(1050 + 1150 + 1250 + 1350 + 1450)
    );
    assert!(state.adb().close(std::time::Duration::from_secs(30)).await);
}
