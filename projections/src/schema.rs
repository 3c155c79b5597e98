//! Where the read models live: a Postgres schema (`warren` by default) chosen through each
//! connection's `search_path`, so the same SQL serves the live schema and a rebuild.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;

/// The schema the live read models are served from.
pub const LIVE_SCHEMA: &str = "warren";

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Why the read side could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database URL does not parse.
    #[error("invalid database url")]
    Url(#[source] sqlx::Error),
    /// Connecting or creating the schema failed.
    #[error("preparing schema {schema} failed")]
    Prepare {
        /// The schema.
        schema: String,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// Running migrations failed.
    #[error("migrating schema {schema} failed")]
    Migrate {
        /// The schema.
        schema: String,
        /// Cause.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// A pool whose connections resolve unqualified names in `schema`.
pub async fn pool(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, SchemaError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(SchemaError::Url)?
        .options([("search_path", schema)])
        .application_name("warren");
    connect(options, schema, max_connections).await
}

async fn connect(
    options: PgConnectOptions,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, SchemaError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .map_err(|source| SchemaError::Prepare {
            schema: schema.to_owned(),
            source,
        })
}

/// Creates `schema` if needed and migrates it. Returns a pool bound to it.
pub async fn open(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, SchemaError> {
    prepare(pool(url, schema, max_connections).await?, schema).await
}

/// [`open`] for a rebuild: its commits do not wait for the disk (`synchronous_commit = off`).
/// A crash can lose the last few, which is harmless: a rebuild that did not swap in is thrown
/// away and started again, and the swap itself commits on a connection of the live pool. Its
/// index builds run side by side, one process each (`max_parallel_maintenance_workers = 0`:
/// more workers only contend for the same cores).
pub async fn open_rebuild(
    url: &str,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, SchemaError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(SchemaError::Url)?
        .options([
            ("search_path", schema),
            ("synchronous_commit", "off"),
            ("max_parallel_maintenance_workers", "0"),
        ])
        .application_name("warren-replay");
    prepare(connect(options, schema, max_connections).await?, schema).await
}

async fn prepare(pool: PgPool, schema: &str) -> Result<PgPool, SchemaError> {
    // The name is quoted by `quote_ident`; schema names cannot be bound parameters.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(schema)
    )))
    .execute(&pool)
    .await
    .map_err(|source| SchemaError::Prepare {
        schema: schema.to_owned(),
        source,
    })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| SchemaError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// Quotes an identifier for interpolation into DDL (schema names cannot be bound parameters).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
