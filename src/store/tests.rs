//! The store's tests: recording, dedupe, recovery, pruning; a database of 0.1.0; strict decoding.

use super::*;
use crate::event::{Event, EventKind, Trigger};

fn job(entry: &str) -> NewJob {
    NewJob { entry: entry.into(), trigger: Trigger::Webhook, event: Event::manual(Some("main"), Some("abc")) }
}

/// The ids of the jobs an insert recorded.
fn new_ids(inserted: Inserted) -> Vec<i64> {
    inserted.new.iter().map(|(id, _)| *id).collect()
}

#[test]
fn insert_dedupe_recover_finish() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids = new_ids(store.insert(Some("host:d1"), b"{}", &[job("a"), job("b")]).unwrap());
    assert_eq!(ids.len(), 2);
    let again = store.insert(Some("host:d1"), b"{}", &[job("a")]).unwrap();
    assert!(again.is_duplicate());
    assert_eq!(
        again.seen,
        vec![Seen { id: ids[0], entry: "a".into(), state: JobState::Queued, newer: None }]
    );
    store.mark_running(ids[0]).unwrap();
    drop(store);
    // After a "crash", both come back, the running one as queued.
    let store = Store::open(dir.path()).unwrap();
    let back = store.unfinished().unwrap();
    assert_eq!(back.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert!(back.iter().all(|j| j.state == JobState::Queued));
    assert_eq!(back[0].event.branch.as_deref(), Some("main"));
    let path = store.write_payload(ids[0]).unwrap().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    store.finish(ids[0], JobState::Succeeded, Some(0), None).unwrap();
    // The payload stays while job b still needs it, and goes after.
    assert!(store.write_payload(ids[1]).unwrap().is_some());
    store.finish(ids[1], JobState::Failed, Some(1), Some("action 1 failed")).unwrap();
    assert!(store.write_payload(ids[1]).unwrap().is_none());
    assert!(store.unfinished().unwrap().is_empty());

    // A new webhook job supersedes the waiting ones of its entry and ref as it is recorded, in
    // the same transaction: the older one's payload goes, and it can no longer start.
    let old = new_ids(store.insert(Some("host:d2"), b"{}", &[job("e")]).unwrap());
    let inserted = store.insert(Some("host:d3"), b"{}", &[job("e")]).unwrap();
    assert_eq!(inserted.superseded, vec![(old[0], inserted.new[0].0)]);
    let new = new_ids(inserted);
    let superseded = store.job(old[0]).unwrap().unwrap();
    assert_eq!(superseded.state, JobState::Superseded);
    assert!(superseded.reason.unwrap().contains(&format!("job {}", new[0])));
    assert!(store.write_payload(old[0]).unwrap().is_none(), "its payload is dropped");
    assert!(!store.mark_running(old[0]).unwrap(), "a superseded job does not start");
    assert!(!store.supersede(old[0], new[0]).unwrap(), "nor is it superseded twice");

    // A waiting webhook job left with a newer one of the same entry and ref (a database of an
    // earlier version) is superseded at start, whatever the newer one's state.
    store
        .conn()
        .execute(
            "UPDATE jobs SET state = 'queued', finished_at = NULL, reason = NULL WHERE id = ?1",
            [old[0]],
        )
        .unwrap();
    store.finish(new[0], JobState::Succeeded, Some(0), None).unwrap();
    assert_eq!(store.supersede_stale().unwrap(), 1);
    let stale = store.job(old[0]).unwrap().unwrap();
    assert_eq!(stale.state, JobState::Superseded);
    assert!(stale.reason.unwrap().contains(&format!("job {}", new[0])));

    // A running job is not superseded: it ends as its actions do.
    let running = new_ids(store.insert(Some("host:d4"), b"{}", &[job("g")]).unwrap());
    assert!(store.mark_running(running[0]).unwrap());
    let newer = store.insert(Some("host:d5"), b"{}", &[job("g")]).unwrap();
    assert!(newer.superseded.is_empty());
    assert!(!store.supersede(running[0], newer.new[0].0).unwrap());
    assert_eq!(store.job(running[0]).unwrap().unwrap().state, JobState::Running);
    store.finish(running[0], JobState::Succeeded, Some(0), None).unwrap();
    store.finish(newer.new[0].0, JobState::Succeeded, Some(0), None).unwrap();

    // A foreground run whose process is alive is left alone; one whose process is gone fails.
    let live = store.insert_foreground(&job("c")).unwrap();
    let dead = store.insert_foreground(&job("d")).unwrap();
    store.conn().execute("UPDATE jobs SET foreground_pid = 2147483646 WHERE id = ?1", [dead]).unwrap();
    assert!(store.unfinished().unwrap().is_empty());
    assert_eq!(store.job(live).unwrap().unwrap().state, JobState::Running);
    assert_eq!(store.job(dead).unwrap().unwrap().state, JobState::Failed);
    let b = store.job(ids[1]).unwrap().unwrap();
    assert_eq!(
        (b.state, b.exit_code, b.reason.as_deref()),
        (JobState::Failed, Some(1), Some("action 1 failed"))
    );

    // Pruning keeps the newest finished jobs and the releases (succeeded, with a commit), and
    // never touches unfinished ones.
    let before = store.recent(100).unwrap();
    let release = |j: &Job| j.state == JobState::Succeeded && !j.event.after.is_empty();
    let newest = before.iter().map(|j| j.id).max().unwrap();
    let victim = before.iter().find(|j| j.state.is_final() && j.id < newest && !release(j)).unwrap().id;
    std::fs::write(store.log_path(victim), "log").unwrap();
    let gone = before.iter().filter(|j| j.state.is_final() && j.id < newest && !release(j)).count();
    assert!(gone > 0);
    assert_eq!(store.prune_to(1).unwrap(), gone);
    let after = store.recent(100).unwrap();
    assert_eq!(after.len(), before.len() - gone);
    assert!(after.iter().all(|j| !j.state.is_final() || j.id == newest || release(j)));
    assert_eq!(
        after.iter().filter(|j| !j.state.is_final()).count(),
        before.iter().filter(|j| !j.state.is_final()).count()
    );
    assert!(!store.log_path(victim).exists(), "a pruned job's log goes with it");
    let _ = ids;
}

/// A database written by 0.1.0 (`tests/fixtures/store-0.1.0`: made by that version's
/// daemon and trigger, see the README there) opens, is migrated, and keeps every job.
#[test]
fn a_database_written_by_0_1_0_opens_migrated() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1.0/jobs.sqlite3");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join(DATABASE)).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(schema::version(&store.conn()).unwrap(), schema::LATEST);

    let jobs = store.recent(100).unwrap();
    let states: Vec<(i64, &str, JobState)> =
        jobs.iter().rev().map(|j| (j.id, j.entry.as_str(), j.state)).collect();
    assert_eq!(
        states,
        [
            (1, "site", JobState::Succeeded),
            (2, "failing", JobState::Failed),
            (3, "slow", JobState::Succeeded),
            (4, "later", JobState::Superseded),
            (5, "later", JobState::Queued),
            (6, "later", JobState::Queued),
            (7, "failing", JobState::Failed),
        ]
    );
    // Manual runs are manual events now, with no provider, in the rows and the events.
    for id in [6, 7] {
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(
            (job.trigger, job.event.kind, job.event.provider),
            (Trigger::Manual, EventKind::Manual, None)
        );
        assert_eq!(job.event.name(), "manual");
        let (event, provider): (String, String) = store
            .conn()
            .query_row("SELECT event, provider FROM jobs WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((event.as_str(), provider.as_str()), ("manual", ""));
    }
    assert_eq!(store.job(6).unwrap().unwrap().event.branch.as_deref(), Some("main"));
    assert_eq!(store.job(7).unwrap().unwrap().exit_code, Some(3));
    let site = store.job(1).unwrap().unwrap();
    assert_eq!((site.event.provider, site.event.name()), (Some(crate::event::Provider::Github), "push"));
    // Its deliveries are still known, its waiting jobs still wait, with their payloads.
    let key = format!("{}:f3c465a4-e181-53a7-b951-9e31bc243d75", crate::event::Provider::Github);
    let again = store.insert(Some(&key), b"{}", &[job("site")]).unwrap();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!((again.seen[0].id, again.seen[0].entry.as_str()), (1, "site"));
    assert_eq!(store.unfinished().unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), [5, 6]);
    let payload = store.write_payload(5).unwrap().unwrap();
    assert_eq!(std::fs::metadata(payload).unwrap().len(), 7703);
    // Opening it again migrates nothing more.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(schema::version(&store.conn()).unwrap(), schema::LATEST);
    assert_eq!(store.recent(100).unwrap().len(), 7);
}

#[test]
fn an_unknown_state_or_trigger_is_an_error_not_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids = new_ids(store.insert(None, b"{}", &[job("a"), job("b")]).unwrap());
    store.conn().execute("UPDATE jobs SET state = 'done' WHERE id = ?1", [ids[0]]).unwrap();
    store.conn().execute("UPDATE jobs SET trigger = 'cron' WHERE id = ?1", [ids[1]]).unwrap();
    let err = store.job(ids[0]).unwrap_err().to_string();
    assert!(err.contains(&format!("job {}: unknown state \"done\"", ids[0])), "{err}");
    let err = store.job(ids[1]).unwrap_err().to_string();
    assert!(err.contains("unknown trigger \"cron\""), "{err}");
    assert!(store.recent(10).is_err());
}

/// A redelivery (the same delivery id again) runs an entry again only when its latest job of
/// that delivery failed, timed out or was cancelled; per entry, within one delivery.
#[test]
fn a_redelivery_reruns_only_what_did_not_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = new_ids(store.insert(Some("p1:r1"), b"{}", &[job("a"), job("b"), job("c")]).unwrap());
    store.finish(first[0], JobState::Failed, Some(1), Some("action 1 failed")).unwrap();
    store.finish(first[1], JobState::Succeeded, Some(0), None).unwrap();
    store.finish(first[2], JobState::TimedOut, None, Some("timed out")).unwrap();

    let again = store.insert(Some("p1:r1"), b"{}", &[job("a"), job("b"), job("c")]).unwrap();
    assert_eq!(again.new.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [0, 2], "a and c run again");
    assert_eq!(
        again.seen,
        vec![Seen { id: first[1], entry: "b".into(), state: JobState::Succeeded, newer: None }]
    );
    // The rerun of a is its latest job now: while it waits, a third delivery runs nothing.
    let third = store.insert(Some("p1:r1"), b"{}", &[job("a")]).unwrap();
    assert!(third.is_duplicate());
    assert_eq!(third.seen[0].id, again.new[0].0);
    // Another provider's delivery with the same id is another delivery.
    assert_eq!(new_ids(store.insert(Some("p2:r1"), b"{}", &[job("a")]).unwrap()).len(), 1);
    // A failed job with a newer one of its entry and ref since: not run again (an older
    // commit never deploys after a newer one); the answer names the newer job.
    let old = new_ids(store.insert(Some("p1:r3"), b"{}", &[job("f")]).unwrap());
    store.finish(old[0], JobState::Failed, Some(1), None).unwrap();
    let newer = new_ids(store.insert(Some("p1:r4"), b"{}", &[job("f")]).unwrap());
    let again = store.insert(Some("p1:r3"), b"{}", &[job("f")]).unwrap();
    assert!(again.is_duplicate());
    assert_eq!(again.seen[0].newer, Some(newer[0]));
    // A cancelled job runs again too.
    let c = new_ids(store.insert(Some("p1:r2"), b"{}", &[job("d")]).unwrap());
    store.finish(c[0], JobState::Cancelled, None, Some("cancelled")).unwrap();
    assert_eq!(store.insert(Some("p1:r2"), b"{}", &[job("d")]).unwrap().new.len(), 1);
}

/// Deliveries recorded at the same instant share commits (a group commit) and each caller gets
/// its own jobs back; the same delivery sent twice at once is recorded once.
#[test]
fn simultaneous_deliveries_are_each_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..20 {
                    let entry = format!("e{t}-{i}");
                    let inserted =
                        store.insert(Some(&format!("p1:g{t}-{i}")), b"{}", &[job(&entry)]).unwrap();
                    got.push((entry, new_ids(inserted)[0]));
                }
                // The same delivery from every thread at once.
                let same = store.insert(Some("p1:same"), b"{}", &[job("same")]).unwrap();
                (got, same)
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut new_same = 0;
    for t in threads {
        let (got, same) = t.join().unwrap();
        for (entry, id) in got {
            assert_eq!(store.job(id).unwrap().unwrap().entry, entry, "each caller gets its own job");
            assert!(ids.insert(id));
        }
        new_same += same.new.len();
        assert!(same.new.len() + same.seen.len() == 1);
    }
    assert_eq!(ids.len(), 16 * 20);
    assert_eq!(new_same, 1, "one delivery, one job, however many times it arrived at once");
}

/// A delivery whose recording fails half-way (its payload written, its job refused) leaves
/// nothing: not the payload, not the superseding of the job it would have replaced.
#[test]
fn a_delivery_that_fails_half_way_is_not_recorded_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let older = new_ids(store.insert(Some("p1:a"), b"{}", &[job("e")]).unwrap());
    let count = |sql: &str| store.conn().query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let payloads = count("SELECT COUNT(*) FROM payloads");
    store
        .conn()
        .execute_batch(
            "CREATE TEMP TRIGGER refuse AFTER UPDATE OF state ON jobs
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
        )
        .unwrap();
    let err = store.insert(Some("p1:b"), b"{\"x\":1}", &[job("e")]).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(count("SELECT COUNT(*) FROM payloads"), payloads, "the payload was rolled back");
    assert_eq!(count("SELECT COUNT(*) FROM jobs"), 1, "the job was rolled back");
    assert_eq!(store.job(older[0]).unwrap().unwrap().state, JobState::Queued, "nothing superseded");
    store.conn().execute_batch("DROP TRIGGER refuse").unwrap();
    let again = store.insert(Some("p1:b"), b"{}", &[job("e")]).unwrap();
    assert_eq!(again.superseded, vec![(older[0], again.new[0].0)], "the same delivery records later");
}

/// The newest releases of each entry outlive pruning; older ones, and other jobs, go.
#[test]
fn pruning_keeps_each_entry_s_newest_releases() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keep = RELEASES_KEPT as usize;
    let mut releases = Vec::new();
    for i in 0..keep + 5 {
        let id = new_ids(store.insert(Some(&format!("p1:r{i}")), b"{}", &[job("site")]).unwrap())[0];
        store.finish(id, JobState::Succeeded, Some(0), None).unwrap();
        releases.push(id);
        let other = new_ids(store.insert(Some(&format!("p1:o{i}")), b"{}", &[job("other")]).unwrap())[0];
        store.finish(other, JobState::Failed, Some(1), None).unwrap();
    }
    store.prune_to(1).unwrap();
    let left: Vec<i64> = store.releases("site", 100).unwrap().iter().map(|j| j.id).rev().collect();
    assert_eq!(left, releases[5..]);
    assert!(store
        .recent(100)
        .unwrap()
        .iter()
        .all(|j| j.entry == "site" || j.id == releases.len() as i64 * 2));
}

/// Pruning keeps the newest jobs by id and every unfinished one, however old.
#[test]
fn pruning_keeps_the_newest_jobs_and_every_unfinished_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids: Vec<i64> = (0..30)
        .map(|i| {
            new_ids(store.insert(Some(&format!("p1:p{i}")), b"{}", &[job(&format!("e{i}"))]).unwrap())[0]
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        if i != 4 {
            store.finish(*id, JobState::Failed, Some(1), None).unwrap();
        }
    }
    assert_eq!(store.prune_to(10).unwrap(), 19);
    let left: Vec<i64> = store.recent(100).unwrap().iter().rev().map(|j| j.id).collect();
    let mut want = vec![ids[4]];
    want.extend(&ids[20..]);
    assert_eq!(left, want);
    assert_eq!(store.prune_to(10).unwrap(), 0, "nothing more to remove");
}

/// A reporter that records what it was shown and sends one item per change, in one lane per
/// entry.
struct Recorder(Mutex<Vec<Shown>>);

/// What a reporter was shown of a change: job, state, whether the entry was failing, and the
/// commit that superseded the job.
type Shown = (i64, JobState, Option<bool>, Option<String>);

impl Reporter for Recorder {
    fn wants(&self, entry: &str) -> bool {
        entry != "quiet"
    }
    fn report(&self, change: &Change<'_>) -> Vec<Outgoing> {
        let superseded = change.superseded_by.map(str::to_string);
        lock(&self.0).push((change.job, change.state, change.was_failing, superseded));
        vec![Outgoing {
            sink: "status".into(),
            lane: format!("lane:{}", change.entry),
            kind: change.state.as_str().into(),
            report: "{}".into(),
        }]
    }
    fn written(&self) {}
}

/// Each change of a reported entry writes its item in the same transaction; items of a lane go
/// out one at a time, oldest first; failing streaks are told to the reporter.
#[test]
fn changes_write_outbox_items_in_order_per_lane() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    store.set_reporter(recorder.clone());
    let a = new_ids(store.insert(Some("d1"), b"{}", &[job("a")]).unwrap())[0];
    let quiet = new_ids(store.insert(Some("d2"), b"{}", &[job("quiet")]).unwrap())[0];
    store.mark_running(a).unwrap();
    store.finish(a, JobState::Failed, Some(1), Some("action 1 exited with 1")).unwrap();
    store.mark_running(quiet).unwrap();
    store.finish(quiet, JobState::Succeeded, Some(0), None).unwrap();
    let b = new_ids(store.insert(Some("d3"), b"{}", &[job("b")]).unwrap())[0];
    let heads = |dest: &str| store.outbox_heads(dest, 10).unwrap();
    let (lane_a, lane_b) = (heads("status:a"), heads("status:b"));
    assert_eq!((lane_a.len(), lane_b.len()), (1, 1), "one head per lane: {lane_a:?} {lane_b:?}");
    assert_eq!((lane_a[0].job, lane_a[0].kind.as_str()), (a, "queued"));
    assert_eq!((lane_b[0].job, lane_b[0].kind.as_str()), (b, "queued"));
    assert_eq!(store.outbox_backlog().unwrap().pending, 4, "nothing for the entry not reported");
    assert_eq!(store.outbox_strays(&["status:a".into()], 10).unwrap()[0].job, b, "b's entry is not known");
    // A failed try keeps the lane's order: the next item waits behind it.
    let first = lane_a[0].id;
    store.outbox_retry(first, "answered 500", now_ms() + 60_000).unwrap();
    let lane_a = heads("status:a");
    assert_eq!((lane_a[0].id, lane_a[0].attempts), (first, 1));
    assert_eq!(store.outbox_backlog().unwrap().oldest_error.as_deref(), Some("answered 500"));
    store.outbox_done(first).unwrap();
    let next = heads("status:a");
    assert_eq!((next.len(), next[0].kind.as_str()), (1, "running"), "the next item is the lane's head");
    // Delivery ids: the store's id and the item's, never handed out again once deleted.
    let (last, delivery) = (next[0].id, next[0].delivery.clone());
    assert!(delivery.ends_with(&format!("-{last}")) && delivery.len() > 17, "{delivery}");
    for item in heads("status:a").into_iter().chain(heads("status:b")) {
        store.outbox_done(item.id).unwrap();
    }
    while let Some(item) = heads("status:a").into_iter().chain(heads("status:b")).next() {
        store.outbox_done(item.id).unwrap();
    }
    assert_eq!(store.outbox_backlog().unwrap().pending, 0);
    let g = new_ids(store.insert(Some("d8"), b"{}", &[job("a")]).unwrap())[0];
    let fresh = heads("status:a");
    assert_eq!(fresh[0].job, g);
    assert!(fresh[0].id > last, "an emptied outbox hands out no id twice: {} after {last}", fresh[0].id);

    // Streaks: a failure after a failure, a success after it, and a superseded job's newer commit.
    let c = new_ids(store.insert(Some("d4"), b"{}", &[job("a")]).unwrap())[0];
    store.finish(c, JobState::Failed, Some(1), None).unwrap();
    let d = new_ids(store.insert(Some("d5"), b"{}", &[job("a")]).unwrap())[0];
    store.finish(d, JobState::Succeeded, Some(0), None).unwrap();
    let e = new_ids(store.insert(Some("d6"), b"{}", &[job("a")]).unwrap())[0];
    let f = new_ids(store.insert(Some("d7"), b"{}", &[job("a")]).unwrap())[0];
    store.supersede(e, f).unwrap();
    let seen = lock(&recorder.0).clone();
    let ended = |id: i64| seen.iter().find(|(j, s, _, _)| *j == id && s.is_final()).cloned().unwrap();
    assert_eq!(ended(a).2, Some(false), "the first failure starts a streak");
    assert_eq!(ended(c).2, Some(true), "the second is in the same streak");
    assert_eq!(ended(d).2, Some(true), "the success ends it");
    assert_eq!(ended(e), (e, JobState::Superseded, None, Some("abc".into())));
}
