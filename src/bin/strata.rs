//! The strata command line (until the CLI lands: open a database, migrate, print its settings).

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> strata::Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("strata-demo.db"));
    let db = strata::Db::open(&path)?;
    println!("database   {}", db.path().display());
    println!("schema     V{}", db.schema_version()?.unwrap_or(0));
    let pragmas = [
        "journal_mode",
        "synchronous",
        "busy_timeout",
        "cache_size",
        "temp_store",
        "mmap_size",
        "foreign_keys",
        "journal_size_limit",
        "trusted_schema",
        "query_only",
    ];
    db.read(|c| {
        for name in pragmas {
            let value: rusqlite::types::Value =
                c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
            println!("{name:<18} {value:?}");
        }
        Ok(())
    })
}
