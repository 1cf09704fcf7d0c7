//! The schema, as numbered, append-only migrations tracked in `PRAGMA user_version`.
//!
//! Never edit a migration that has shipped: add a new one. A database whose `user_version` is
//! above [`LATEST`] was written by a newer daemon (an image rollback does this) and is refused
//! rather than misread.

use rusqlite::Connection;

use super::StoreError;

/// The migrations, in order; migration `i` moves the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: op log, domain tables of the foundation, and bookkeeping.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- The op log is the outbox: `seq` is the local order, the sync agent ships local-origin ops
    -- above the relay's acknowledged cursor (a rowid range scan, so no index on origin). `extra`
    -- holds envelope fields from newer schema versions (JSON, NULL when none), so they survive.
    CREATE TABLE ops (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        v            INTEGER NOT NULL,
        hlc_wall     INTEGER NOT NULL,
        hlc_counter  INTEGER NOT NULL,
        hlc_node     TEXT NOT NULL,
        origin       TEXT NOT NULL,
        scope        TEXT NOT NULL,
        kind         TEXT NOT NULL,
        entity_id    TEXT NOT NULL,
        body         TEXT NOT NULL,
        extra        TEXT,
        received_ms  INTEGER NOT NULL
    ) STRICT;

    -- Last-writer-wins bookkeeping: the HLC of the op that last set each field of each entity.
    CREATE TABLE field_versions (
        entity       TEXT NOT NULL,
        entity_id    TEXT NOT NULL,
        field        TEXT NOT NULL,
        hlc_wall     INTEGER NOT NULL,
        hlc_counter  INTEGER NOT NULL,
        hlc_node     TEXT NOT NULL,
        op_id        TEXT NOT NULL,
        PRIMARY KEY (entity, entity_id, field)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE events (
        id        TEXT PRIMARY KEY,
        event_id  TEXT NOT NULL,
        name      TEXT NOT NULL DEFAULT '',
        starts_at TEXT,
        ends_at   TEXT,
        timezone  TEXT,
        deleted   INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    CREATE TABLE zones (
        id        TEXT PRIMARY KEY,
        event_id  TEXT NOT NULL,
        name      TEXT NOT NULL DEFAULT '',
        capacity  INTEGER,
        deleted   INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    -- Beacons are keyed on their payload id (e.g. `ibeacon:<uuid>:<major>:<minor>`), never a MAC.
    CREATE TABLE beacons (
        id          TEXT PRIMARY KEY,
        event_id    TEXT NOT NULL,
        kind        TEXT NOT NULL DEFAULT 'badge',
        zone_id     TEXT,
        label       TEXT NOT NULL DEFAULT '',
        deleted     INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    -- No UNIQUE on ticket_code or badge: remote ops must always apply (convergence beats
    -- constraints); lookups cope with several matches.
    CREATE TABLE attendees (
        id               TEXT PRIMARY KEY,
        event_id         TEXT NOT NULL,
        name             TEXT NOT NULL DEFAULT '',
        email            TEXT,
        company          TEXT,
        ticket_code      TEXT,
        badge_beacon_id  TEXT,
        privacy          TEXT NOT NULL DEFAULT 'venue',
        deleted          INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX attendees_ticket ON attendees (event_id, ticket_code);
    CREATE INDEX attendees_name ON attendees (event_id, name COLLATE NOCASE);
    CREATE INDEX attendees_badge ON attendees (badge_beacon_id);

    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        event_id    TEXT NOT NULL,
        title       TEXT NOT NULL DEFAULT '',
        zone_id     TEXT,
        starts_at   TEXT,
        ends_at     TEXT,
        speakers    TEXT,
        description TEXT,
        deleted     INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    -- Check-ins are append-only facts, one row per op. The earliest by HLC per attendee is the
    -- check-in; later ones point at it in `duplicate_of` and are listed in `conflicts`.
    CREATE TABLE checkins (
        op_id         TEXT PRIMARY KEY,
        event_id      TEXT NOT NULL,
        attendee_id   TEXT NOT NULL,
        device_id     TEXT,
        origin        TEXT NOT NULL,
        hlc_wall      INTEGER NOT NULL,
        hlc_counter   INTEGER NOT NULL,
        hlc_node      TEXT NOT NULL,
        duplicate_of  TEXT
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX checkins_attendee ON checkins (attendee_id);

    -- Kiosks, signage displays and BLE gateways. Credentials are argon2 PHC strings. Devices are
    -- this appliance's local access list and are not replicated (see docs/architecture.md).
    CREATE TABLE devices (
        id             TEXT PRIMARY KEY,
        event_id       TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('kiosk', 'signage', 'gateway')),
        name           TEXT NOT NULL DEFAULT '',
        password_hash  TEXT NOT NULL,
        created_ms     INTEGER NOT NULL,
        revoked_ms     INTEGER
    ) STRICT;

    -- Every resolved conflict, keyed by the op that lost or was flagged.
    CREATE TABLE conflicts (
        op_id         TEXT PRIMARY KEY,
        kind          TEXT NOT NULL,
        entity_id     TEXT NOT NULL,
        winner_op_id  TEXT NOT NULL,
        detail        TEXT NOT NULL,
        recorded_ms   INTEGER NOT NULL
    ) STRICT;

    -- Results of requests made under an idempotency key, per principal (device or admin).
    CREATE TABLE idempotency (
        principal     TEXT NOT NULL,
        key           TEXT NOT NULL,
        request_hash  TEXT NOT NULL,
        status        INTEGER NOT NULL,
        response      TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        PRIMARY KEY (principal, key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX idempotency_created ON idempotency (created_ms);
    "#,
    // 2: zone transitions of attendees (append-only facts, purged after the retention period).
    r#"
    -- `zone_id` is NULL when the attendee's privacy allows only venue-level presence, and for
    -- `left`. Never a device address: unknown badges are counted, not stored.
    CREATE TABLE zone_transitions (
        op_id        TEXT PRIMARY KEY,
        event_id     TEXT NOT NULL,
        attendee_id  TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('entered', 'moved', 'left')),
        zone_id      TEXT,
        at_ms        INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX zone_transitions_attendee ON zone_transitions (attendee_id, at_ms);
    CREATE INDEX zone_transitions_at ON zone_transitions (at_ms);

    -- "Forget my trail": per attendee, transitions at or before `before_ms` are deleted and never
    -- stored again, whichever order the ops arrive in.
    CREATE TABLE location_forgets (
        attendee_id  TEXT PRIMARY KEY,
        before_ms    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 3: MQTT state that must outlive the broker (which keeps nothing across restarts).
    r#"
    -- Every retained message the daemon publishes (signage content, occupancy, device and
    -- daemon status, active alerts), re-published before the listeners open after a restart.
    CREATE TABLE mqtt_retained (
        topic       TEXT PRIMARY KEY,
        payload     BLOB NOT NULL,
        updated_ms  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    -- Alerts raised by devices or the daemon; the active ones form `alerts/active`. `id` is the
    -- sender's alert id, so a QoS 1 redelivery is recognised.
    CREATE TABLE alerts (
        id          TEXT PRIMARY KEY,
        severity    TEXT NOT NULL,
        source      TEXT NOT NULL,
        message     TEXT NOT NULL,
        raised_ms   INTEGER NOT NULL,
        cleared_ms  INTEGER
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX alerts_active ON alerts (cleared_ms, raised_ms);
    "#,
    // 4: the attendee hub: messages with a per-channel local sequence, and token keys.
    r#"
    -- `seq` numbers a channel's messages in the order this appliance learned of them; clients
    -- resume from it. `message_id` (the op's entity id) is the same on every appliance.
    CREATE TABLE messages (
        event_id    TEXT NOT NULL,
        channel     TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        message_id  TEXT NOT NULL UNIQUE,
        sender      TEXT NOT NULL,
        content     TEXT NOT NULL,
        reply_to    TEXT,
        origin      TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (event_id, channel, seq)
    ) STRICT, WITHOUT ROWID;

    -- Public keys that verify attendee tokens (JWT `kid` → key), per event.
    CREATE TABLE token_keys (
        kid         TEXT PRIMARY KEY,
        alg         TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
        public_pem  TEXT NOT NULL,
        added_ms    INTEGER NOT NULL
    ) STRICT;
    "#,
    // 5: read receipts.
    r#"
    -- How far each attendee has read each channel (a watermark: it only moves forward).
    CREATE TABLE read_marks (
        event_id    TEXT NOT NULL,
        channel     TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (event_id, channel, user_id)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 6: sync with the relay.
    r#"
    -- Ops sync gave up on, with why, for operators: local ops the relay refused (`push`) and
    -- remote ops this build cannot apply (`pull`). The op itself stays in `ops` (push) or is
    -- kept here whole (pull), so nothing is lost and an upgrade can replay it.
    CREATE TABLE sync_parked (
        op_id      TEXT NOT NULL,
        direction  TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
        kind       TEXT NOT NULL,
        reason     TEXT NOT NULL,
        op         TEXT,
        parked_ms  INTEGER NOT NULL,
        PRIMARY KEY (op_id, direction)
    ) STRICT, WITHOUT ROWID;

    -- Keys installed by an admin stay when the relay's key set is replaced.
    ALTER TABLE token_keys ADD COLUMN source TEXT NOT NULL DEFAULT 'local'
        CHECK (source IN ('local', 'relay'));
    "#,
    // 7: message edits, deletes, reactions, mentions; group chats.
    r#"
    -- The winning edit's HLC (last-writer-wins); a delete is final and empties the content.
    ALTER TABLE messages ADD COLUMN edit_wall INTEGER;
    ALTER TABLE messages ADD COLUMN edit_counter INTEGER;
    ALTER TABLE messages ADD COLUMN edit_node TEXT;
    ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    -- Edits and deletes that arrive before their message are found in the log by message id.
    CREATE INDEX ops_message_changes ON ops (entity_id)
        WHERE kind IN ('message.edit', 'message.delete');

    -- Observed-remove sets: an add is a row tagged with its op id; a remove names the tags it
    -- saw, which go to `removed_tags`, so an add that arrives after its remove stays out.
    CREATE TABLE removed_tags (tag TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
    CREATE TABLE reactions (
        tag         TEXT PRIMARY KEY,
        message_id  TEXT NOT NULL,
        emoji       TEXT NOT NULL,
        user_id     TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX reactions_message ON reactions (message_id, emoji, user_id);

    -- `@id` mentions, for mention badges (counted above the reader's watermark).
    CREATE TABLE mentions (
        event_id    TEXT NOT NULL,
        channel     TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        PRIMARY KEY (event_id, user_id, channel, seq)
    ) STRICT, WITHOUT ROWID;

    -- Group chats (`group:{id}`): created once; members are an observed-remove set.
    CREATE TABLE chat_groups (
        group_id    TEXT PRIMARY KEY,
        event_id    TEXT NOT NULL,
        name        TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        created_ms  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE group_members (
        tag         TEXT PRIMARY KEY,
        group_id    TEXT NOT NULL,
        user_id     TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX group_members_group ON group_members (group_id, user_id);
    CREATE INDEX group_members_user ON group_members (user_id);
    "#,
    // 8: appliances' own token-signing keys arrive by sync (`token_key.publish`): a third source.
    r#"
    CREATE TABLE token_keys_next (
        kid         TEXT PRIMARY KEY,
        alg         TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
        public_pem  TEXT NOT NULL,
        added_ms    INTEGER NOT NULL,
        source      TEXT NOT NULL DEFAULT 'local'
                    CHECK (source IN ('local', 'relay', 'appliance'))
    ) STRICT;
    INSERT INTO token_keys_next (kid, alg, public_pem, added_ms, source)
        SELECT kid, alg, public_pem, added_ms, source FROM token_keys;
    DROP TABLE token_keys;
    ALTER TABLE token_keys_next RENAME TO token_keys;
    "#,
    // 9: badge printing. Printers and print jobs are this appliance's own (not ops, like
    // devices): a job is an outbox row written with the check-in that asks for it.
    r#"
    CREATE TABLE printers (
        id          TEXT PRIMARY KEY,
        event_id    TEXT NOT NULL,
        name        TEXT NOT NULL DEFAULT '',
        kind        TEXT NOT NULL CHECK (kind IN ('ipp', 'zpl')),
        uri         TEXT NOT NULL,
        media       TEXT NOT NULL,
        kiosks      TEXT NOT NULL DEFAULT '[]',
        zpl_font    TEXT,
        created_ms  INTEGER NOT NULL,
        removed_ms  INTEGER
    ) STRICT;
    -- One row per badge to print, sent in `id` order per printer. `printer_job_id` is the IPP
    -- job id once the printer accepted it; `detail` the printer's last word (why it waits or
    -- failed).
    CREATE TABLE print_jobs (
        id               INTEGER PRIMARY KEY,
        printer_id       TEXT NOT NULL,
        attendee_id      TEXT NOT NULL,
        checkin_id       TEXT,
        requested_by     TEXT NOT NULL,
        reason           TEXT NOT NULL CHECK (reason IN ('checkin', 'reprint')),
        state            TEXT NOT NULL
                         CHECK (state IN ('queued', 'sending', 'printing', 'done', 'failed', 'cancelled')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL,
        printer_job_id   INTEGER,
        detail           TEXT,
        created_ms       INTEGER NOT NULL,
        updated_ms       INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX print_jobs_open ON print_jobs (printer_id, id)
        WHERE state IN ('queued', 'sending', 'printing');
    CREATE INDEX print_jobs_attendee ON print_jobs (attendee_id, id);
    ALTER TABLE devices ADD COLUMN print_mode TEXT NOT NULL DEFAULT 'always'
        CHECK (print_mode IN ('always', 'ask', 'never'));
    ALTER TABLE attendees ADD COLUMN role TEXT;
    "#,
    // 10: several appliances on the LAN. The outbox becomes every op the relay may not have,
    // whichever node made it (`upstream` = 1: it came from the relay, never pushed); until now
    // only the relay brought other nodes' ops. `peer_cursors`: how far each peer's log was
    // pulled (its seq).
    r#"
    ALTER TABLE ops ADD COLUMN upstream INTEGER NOT NULL DEFAULT 0;
    UPDATE ops SET upstream = 1
        WHERE origin <> coalesce((SELECT value FROM meta WHERE key = 'node_id'), '');
    CREATE TABLE peer_cursors (
        node        TEXT PRIMARY KEY,
        cursor      INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// The schema version this build writes and reads.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings the database to [`LATEST`] in one transaction, or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > LATEST {
        return Err(StoreError::NewerSchema {
            found,
            supported: LATEST,
        });
    }
    if found == LATEST {
        return Ok(found);
    }
    let tx = conn.transaction()?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                version: index as u32 + 1,
                source,
            })?;
    }
    // PRAGMA takes no bound parameters; LATEST is a compile-time number.
    tx.execute_batch(&format!("PRAGMA user_version = {LATEST}"))?;
    tx.commit()?;
    Ok(LATEST)
}
