//! The relay's schema as numbered, append-only migrations, one list for both backends: each
//! step has its SQLite and its PostgreSQL form, and a database records the last step applied
//! (SQLite: `user_version`; PostgreSQL: the one-row `relay_schema`). A database written by a
//! newer relay is refused, so an older binary never writes to a schema it does not know.
//!
//! Step 1 is written with `IF NOT EXISTS`, so databases made before the schema was versioned
//! (version 0, tables already there) go through it unchanged and on to the later steps.

use rusqlite::Connection;

use super::StoreError;

/// One schema step.
pub struct Migration {
    /// Its number; the database records the last one applied.
    pub version: u32,
    /// What it does, for the log.
    pub name: &'static str,
    /// Applies it to SQLite (inside a transaction the caller commits).
    pub sqlite: fn(&Connection) -> rusqlite::Result<()>,
    /// Its PostgreSQL form (run inside a transaction).
    pub postgres: &'static str,
}

/// Every step, in order. Append only: a released step never changes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "appliances, operators, the log, parked ops, conflicts, token keys",
        sqlite: |conn| conn.execute_batch(SQLITE_1),
        postgres: POSTGRES_1,
    },
    Migration {
        version: 2,
        name: "node binding: each appliance token bound to one node id",
        sqlite: |conn| {
            // Relays made before versioning may have the column already.
            let has = conn
                .prepare("SELECT 1 FROM pragma_table_info('appliances') WHERE name = 'node_id'")?
                .exists([])?;
            if !has {
                conn.execute_batch("ALTER TABLE appliances ADD COLUMN node_id TEXT")?;
            }
            conn.execute_batch(
                "CREATE UNIQUE INDEX IF NOT EXISTS appliances_node ON appliances (node_id)",
            )
        },
        postgres: "ALTER TABLE appliances ADD COLUMN IF NOT EXISTS node_id TEXT;
                   CREATE UNIQUE INDEX IF NOT EXISTS appliances_node ON appliances (node_id);",
    },
];

/// The newest schema this build knows.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Refuses a database newer than this build.
pub fn check_not_newer(found: u32) -> Result<(), StoreError> {
    match found > latest() {
        true => Err(StoreError::NewerSchema {
            found,
            supported: latest(),
        }),
        false => Ok(()),
    }
}

/// Brings a SQLite relay database to [`latest`], one transaction per step.
pub fn migrate_sqlite(conn: &mut Connection) -> Result<u32, StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    check_not_newer(found)?;
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction()?;
        (step.sqlite)(&tx)?;
        tx.pragma_update(None, "user_version", step.version)?;
        tx.commit()?;
        tracing::info!(
            version = step.version,
            step = step.name,
            "relay schema migrated"
        );
    }
    Ok(latest().max(found))
}

const SQLITE_1: &str = r#"
CREATE TABLE IF NOT EXISTS appliances (
    id            TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    name          TEXT NOT NULL,
    events        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER,
    last_seen_ms  INTEGER,
    report        TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS operators (
    token_hash  TEXT PRIMARY KEY,
    org         TEXT,
    created_ms  INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id        TEXT NOT NULL UNIQUE,
    event        TEXT NOT NULL,
    appliance    TEXT NOT NULL,
    op           TEXT NOT NULL,
    received_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS log_event ON log (event, seq);
CREATE TABLE IF NOT EXISTS parked (
    op_id      TEXT NOT NULL,
    appliance  TEXT NOT NULL,
    org        TEXT NOT NULL,
    event      TEXT NOT NULL,
    code       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    op         TEXT NOT NULL,
    parked_ms  INTEGER NOT NULL,
    PRIMARY KEY (appliance, op_id)
) STRICT;
CREATE TABLE IF NOT EXISTS conflicts (
    appliance     TEXT NOT NULL,
    org           TEXT NOT NULL,
    op_id         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    winner_op_id  TEXT NOT NULL,
    detail        TEXT NOT NULL,
    recorded_ms   INTEGER NOT NULL,
    PRIMARY KEY (appliance, op_id)
) STRICT;
CREATE TABLE IF NOT EXISTS keys (
    event       TEXT NOT NULL,
    kid         TEXT NOT NULL,
    alg         TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    added_ms    INTEGER NOT NULL,
    PRIMARY KEY (event, kid)
) STRICT;
"#;

const POSTGRES_1: &str = r#"
CREATE TABLE IF NOT EXISTS appliances (
    id            TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    name          TEXT NOT NULL,
    events        TEXT[] NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_ms    BIGINT NOT NULL,
    revoked_ms    BIGINT,
    last_seen_ms  BIGINT,
    report        TEXT
);
CREATE TABLE IF NOT EXISTS operators (
    token_hash  TEXT PRIMARY KEY,
    org         TEXT,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_head (
    id   INT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL
);
INSERT INTO relay_head (id, seq) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS log (
    seq          BIGINT PRIMARY KEY,
    op_id        TEXT NOT NULL UNIQUE,
    event        TEXT NOT NULL,
    appliance    TEXT NOT NULL,
    op           TEXT NOT NULL,
    received_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_event ON log (event, seq);
CREATE TABLE IF NOT EXISTS parked (
    op_id      TEXT NOT NULL,
    appliance  TEXT NOT NULL,
    org        TEXT NOT NULL,
    event      TEXT NOT NULL,
    code       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    op         TEXT NOT NULL,
    parked_ms  BIGINT NOT NULL,
    PRIMARY KEY (appliance, op_id)
);
CREATE TABLE IF NOT EXISTS conflicts (
    appliance     TEXT NOT NULL,
    org           TEXT NOT NULL,
    op_id         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    winner_op_id  TEXT NOT NULL,
    detail        TEXT NOT NULL,
    recorded_ms   BIGINT NOT NULL,
    PRIMARY KEY (appliance, op_id)
);
CREATE TABLE IF NOT EXISTS keys (
    event       TEXT NOT NULL,
    kid         TEXT NOT NULL,
    alg         TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    added_ms    BIGINT NOT NULL,
    PRIMARY KEY (event, kid)
);
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay database made before the schema was versioned (the old `CREATE TABLE`s, no
    /// `node_id`, `user_version` 0) is brought to the latest version with its rows kept; a
    /// database from a newer relay is refused.
    #[test]
    fn an_unversioned_database_migrates_and_a_newer_one_is_refused() {
        let mut conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(SQLITE_1).expect("old schema");
        conn.execute(
            "INSERT INTO appliances (id, org, name, events, token_hash, created_ms)
             VALUES ('a1', 'o', 'hall', '[\"ev\"]', 'h', 1)",
            [],
        )
        .expect("a row");
        assert_eq!(migrate_sqlite(&mut conn).expect("migrated"), latest());
        let node: Option<String> = conn
            .query_row("SELECT node_id FROM appliances WHERE id = 'a1'", [], |r| {
                r.get(0)
            })
            .expect("the row and its new column");
        assert_eq!(node, None);
        assert_eq!(
            migrate_sqlite(&mut conn).expect("again"),
            latest(),
            "idempotent"
        );

        conn.pragma_update(None, "user_version", latest() + 1)
            .expect("newer");
        assert!(matches!(
            migrate_sqlite(&mut conn),
            Err(StoreError::NewerSchema { .. })
        ));
    }

    #[test]
    fn versions_are_numbered_one_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }
}
