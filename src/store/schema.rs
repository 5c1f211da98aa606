//! The job database's schema and its ordered migrations.
//!
//! The version is SQLite's `PRAGMA user_version`. Each migration moves the database from one
//! version to the next inside one transaction that also sets the new version, so a crash leaves
//! it at one version or the other, never between. A database written by 0.1.0 has version 0
//! and the version-1 tables: the first migration creates them only where they are missing. A
//! database of a newer version than this program knows is refused, not guessed at.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// One step: the version it leads to, what it does, and its SQL.
struct Migration {
    to: u32,
    what: &'static str,
    sql: &'static str,
}

/// In order; never edit a released one, add the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what: "jobs and their payloads (the schema of 0.1.0)",
        sql: "
CREATE TABLE IF NOT EXISTS payloads (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    entry       TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    delivery    TEXT,
    provider    TEXT NOT NULL,
    event       TEXT NOT NULL,
    repo        TEXT NOT NULL,
    git_ref     TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    exit_code   INTEGER,
    reason      TEXT,
    event_json  TEXT NOT NULL,
    payload_id  INTEGER REFERENCES payloads(id),
    -- Set for a job run in the foreground by wh-automata-trigger: the pid of that process.
    foreground_pid INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_delivery ON jobs(delivery);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
",
    },
    Migration {
        to: 2,
        what: "manual runs without a saved delivery are events of their own (`manual`, no provider)",
        // 0.1.0 recorded them as GitHub pushes marked by `provider_event: manual`.
        sql: "
UPDATE jobs
   SET event = 'manual',
       provider = '',
       event_json = json_set(event_json, '$.kind', 'manual', '$.provider', NULL)
 WHERE trigger = 'manual' AND json_extract(event_json, '$.provider_event') = 'manual';
",
    },
    Migration {
        to: 3,
        what: "an index for finding the newest job of an entry and ref",
        sql: "CREATE INDEX IF NOT EXISTS jobs_entry_ref ON jobs(entry, git_ref, id);",
    },
    Migration {
        to: 4,
        what: "an index for the jobs that share a payload",
        // Without it, recording a job's end scanned the whole history (under the lock the next
        // delivery's insert waits for): with 10,000 jobs kept, 63 accepted deliveries/s.
        sql: "CREATE INDEX IF NOT EXISTS jobs_payload ON jobs(payload_id) WHERE payload_id IS NOT NULL;",
    },
    Migration {
        to: 5,
        what: "the outbox of statuses and messages, failing streaks, and the hosts' ids of deployments",
        sql: "
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL,
    entry      TEXT NOT NULL,
    -- `status`, or `notify:<target>`.
    sink       TEXT NOT NULL,
    -- The items of one lane go out one at a time, in id order.
    lane       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    report     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_lane ON outbox(lane, id);
CREATE TABLE IF NOT EXISTS streaks (
    entry   TEXT PRIMARY KEY,
    failing INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS remote_ids (
    job_id INTEGER NOT NULL,
    sink   TEXT NOT NULL,
    remote TEXT NOT NULL,
    PRIMARY KEY (job_id, sink)
);
",
    },
    Migration {
        to: 6,
        what: "the waiting jobs indexed by entry and ref; no index of every job's state",
        // A new job supersedes the waiting ones of its entry and ref as it is recorded: this
        // finds them among the few waiting jobs, not the entry's whole history. The index of
        // every job's state was written at each change of state and read only at start.
        sql: "
DROP INDEX IF EXISTS jobs_state;
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs(entry, git_ref, id) WHERE state = 'queued';
",
    },
    Migration {
        to: 7,
        what: "outbox ids never reused, each item's destination, the heads of lanes indexed; jobs by commit",
        // Ids were row ids, which SQLite hands out again once the newest rows are deleted: a
        // receiver that dedupes by delivery id (Matrix does) dropped later messages. With
        // AUTOINCREMENT an id is never handed out twice, and the store's own random id goes in
        // front of it on the wire, so a new store (a state_dir made again) repeats none either.
        // `head` marks the first item of each lane: the sender reads the heads of one
        // destination through an index instead of grouping the whole outbox at every try.
        sql: "
CREATE TABLE outbox_v7 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL,
    entry      TEXT NOT NULL,
    sink       TEXT NOT NULL,
    lane       TEXT NOT NULL,
    -- Where the item goes: `status:<entry>` (the entry's API and token), or `notify:<target>`.
    dest       TEXT NOT NULL,
    -- 1 for the first item of its lane (the one that goes next), else 0.
    head       INTEGER NOT NULL DEFAULT 0,
    kind       TEXT NOT NULL,
    report     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    last_error TEXT
);
INSERT INTO outbox_v7 (id, job_id, entry, sink, lane, dest, kind, report, created_at, attempts, next_at, last_error)
     SELECT id, job_id, entry, sink, lane, CASE WHEN sink = 'status' THEN 'status:' || entry ELSE sink END,
            kind, report, created_at, attempts, next_at, last_error
       FROM outbox;
UPDATE outbox_v7 SET head = 1 WHERE id IN (SELECT min(id) FROM outbox_v7 GROUP BY lane);
DROP TABLE outbox;
ALTER TABLE outbox_v7 RENAME TO outbox;
CREATE INDEX outbox_lane ON outbox(lane, id);
CREATE INDEX outbox_heads ON outbox(dest, next_at, id) WHERE head = 1;
-- A push's commit seen before for its entry and ref: how a replay is told (store::replay).
CREATE INDEX IF NOT EXISTS jobs_commit ON jobs(entry, git_ref, commit_sha) WHERE trigger = 'webhook';
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
",
    },
    Migration {
        to: 8,
        what: "frozen entries; polled jobs indexed by commit as webhook ones",
        sql: "
DROP INDEX IF EXISTS jobs_commit;
CREATE INDEX jobs_commit ON jobs(entry, git_ref, commit_sha) WHERE trigger IN ('webhook', 'poll');
CREATE TABLE IF NOT EXISTS frozen (
    entry  TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at     INTEGER NOT NULL
);
",
    },
    Migration {
        to: 9,
        what: "indexes for the job API's filters (newest first, each a walk of one index)",
        // With 100,000 jobs kept, a list by entry took 160 ms, by commit 77 ms, of a rare
        // state or trigger 76 ms, the entries 470 ms (bench/api-load); each is now a few ms.
        // The index of states dropped at 6 is back: the API lists by state, and counts the
        // running, waiting and held jobs at each look at the entries.
        sql: "
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_entry ON jobs(entry);
CREATE INDEX IF NOT EXISTS jobs_entry_state ON jobs(entry, state);
CREATE INDEX IF NOT EXISTS jobs_entry_sha ON jobs(entry, commit_sha);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs(commit_sha);
CREATE INDEX IF NOT EXISTS jobs_trigger ON jobs(trigger);
",
    },
    Migration {
        to: 10,
        what: "each host's result in a job deployed to hosts over OpenSSH",
        sql: "
CREATE TABLE IF NOT EXISTS job_hosts (
    job_id    INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    host      TEXT NOT NULL,
    -- succeeded, failed, unreached, timed_out, cancelled, not_run
    state     TEXT NOT NULL,
    action    INTEGER,
    exit_code INTEGER,
    reason    TEXT,
    at        INTEGER NOT NULL,
    PRIMARY KEY (job_id, position)
);
",
    },
];

/// The version this program writes.
pub const LATEST: u32 = MIGRATIONS[MIGRATIONS.len() - 1].to;

/// The database's version.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the database to [`LATEST`]; returns the version it had. Safe against another process
/// migrating at the same moment: each step re-reads the version under a write lock.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > LATEST {
        return Err(StoreError::Schema(format!(
            "the job database has schema version {found}, written by a newer wh-automata; this one knows \
             versions up to {LATEST} (upgrade, or point state_dir elsewhere)"
        )));
    }
    let fresh = found == 0
        && conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'", [], |r| {
            r.get::<_, i64>(0)
        })? == 0;
    let mut done: Vec<&str> = Vec::new();
    for step in MIGRATIONS.iter().filter(|m| m.to > found) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if version(&tx)? >= step.to {
            continue;
        }
        tx.execute_batch(step.sql).map_err(|e| {
            StoreError::Schema(format!("migration to version {} ({}): {e}", step.to, step.what))
        })?;
        tx.pragma_update(None, "user_version", step.to)?;
        tx.commit()?;
        tracing::debug!(version = step.to, "job database step: {}", step.what);
        done.push(step.what);
    }
    // One line: a new database is created, an older one migrated (with what changed).
    match (fresh, done.is_empty()) {
        (_, true) => {}
        (true, false) => tracing::info!(version = LATEST, "job database created"),
        (false, false) => {
            tracing::info!(from = found, to = LATEST, "job database migrated: {}", done.join("; "))
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_each_other() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.to as usize, i + 1, "{}", m.what);
        }
    }

    #[test]
    fn a_new_database_is_made_at_the_latest_version_and_a_newer_one_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(version(&conn).unwrap(), LATEST);
        assert_eq!(migrate(&mut conn).unwrap(), LATEST, "nothing left to do");
        conn.pragma_update(None, "user_version", LATEST + 1).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer wh-automata"), "{err}");
    }
}
