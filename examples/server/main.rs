//! The expense tracker over HTTP: an axum service on `AsyncDb`.
//!
//! ```text
//! cargo run --release --example server --features tokio    # listens on 127.0.0.1:3000
//! curl -XPOST localhost:3000/users -H 'content-type: application/json' \
//!      -d '{"email":"ada@example.com","name":"Ada"}'
//! curl localhost:3000/users/1
//! curl -XPOST localhost:3000/expenses -H 'content-type: application/json' \
//!      -d '{"user_id":1,"amount":"12.50","description":"lunch","date":"2026-01-02"}'
//! curl 'localhost:3000/users/1/expenses?limit=20'
//! curl localhost:3000/users/1/metrics/2026-01-02
//! ```
//!
//! The database is `strata-server.db` in the temp directory, or the path given as the first
//! argument.

mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("strata-server.db"));
    let state = app::State::open(&path)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "expense tracker on http://{} ({})",
        listener.local_addr()?,
        path.display()
    );
    let adb = state.adb().clone();
    axum::serve(listener, app::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Queued calls finish; the Db closes (optimize, checkpoint) when its last handle drops.
    adb.close(std::time::Duration::from_secs(10)).await;
    Ok(())
}
