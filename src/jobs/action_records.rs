//! What is on disk about a running job's actions, under `state_dir/steps/<job>/`, so that a
//! daemon started after a crash can tell what happened while it was gone:
//!
//! - `total`: how many actions the job has;
//! - `group`: the process group of the action running now: its id and the boot id, written by
//!   the action's wrapper shell (the group's leader) before the command starts; the file's time
//!   tells the leader apart from a later process that reuses its number;
//! - `<n>`: the end of action `n`: its exit status, written by the action's own wrapper shell
//!   as it ends (so an action that ends after the daemon died is still known), or `skip`.
//!
//! At start, [`stop_leftovers`] stops every group still running for this state directory
//! (TERM, then KILL after a grace) before anything runs again, and [`read`] says whether a
//! job's actions all ended (then it is not run again) or not (then it runs again from the
//! start). The directory goes when the job's end is recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The wrapper every action runs in: `sh -c WRAPPER wh-automata COMMAND MARKER GROUP [UMASK]`, as the
/// leader of a new process group. With a record (MARKER and GROUP given), it first writes its
/// group (its pid and the boot id) to GROUP, and starts nothing if the daemon that spawned it is
/// already gone (a new daemon may have looked for leftovers before that write). The command
/// runs in its own `sh -c` (never spliced into this text); its exit status goes to MARKER
/// before the wrapper exits with it.
pub const WRAPPER: &str = r#"if [ -n "$3" ]; then
  boot=; read -r boot 2>/dev/null < /proc/sys/kernel/random/boot_id
  printf '%s %s\n' "$$" "$boot" > "$3"
  kill -0 "$PPID" 2>/dev/null || exit 125
fi
if [ -n "$4" ]; then umask "$4"; fi
sh -c "$1"; s=$?
if [ -n "$2" ]; then printf '%s\n' "$s" > "$2"; fi
exit "$s""#;

/// The record of one running job.
#[derive(Debug, Clone)]
pub struct ActionRecords {
    dir: PathBuf,
}

impl ActionRecords {
    /// Starts the record of a job with `total` actions in `dir`, anew.
    pub fn begin(dir: &Path, total: usize) -> std::io::Result<ActionRecords> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("total"), format!("{total}\n"))?;
        Ok(ActionRecords { dir: dir.to_path_buf() })
    }

    /// Where the wrapper of action `n` (1-based) writes its exit status.
    pub fn marker(&self, n: usize) -> PathBuf {
        self.dir.join(n.to_string())
    }

    /// Action `n` was skipped (`if_changed`).
    pub fn skipped(&self, n: usize) -> std::io::Result<()> {
        std::fs::write(self.marker(n), "skip\n")
    }

    /// Where the wrapper of the running action writes its process group.
    pub fn group_file(&self) -> PathBuf {
        self.dir.join("group")
    }
}

/// How the actions of a job that was running ended, as far as the record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every action ended with status 0 or was skipped.
    Succeeded,
    /// Action `action` ended with `code`.
    Failed { action: usize, code: i32 },
    /// Not every action ended: the job must run again.
    Incomplete,
}

/// What the record in `dir` says of its job.
pub fn read(dir: &Path) -> Ended {
    let Some(total) =
        std::fs::read_to_string(dir.join("total")).ok().and_then(|t| t.trim().parse::<usize>().ok())
    else {
        return Ended::Incomplete;
    };
    for n in 1..=total {
        let Ok(text) = std::fs::read_to_string(dir.join(n.to_string())) else { return Ended::Incomplete };
        match text.trim() {
            "skip" | "0" => {}
            code => match code.parse::<i32>() {
                Ok(code) => return Ended::Failed { action: n, code },
                // Cut short while being written.
                Err(_) => return Ended::Incomplete,
            },
        }
    }
    Ended::Succeeded
}

/// Removes the record in `dir`.
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops every process group recorded under `root` (`state_dir/steps`) that still runs: TERM
/// to all, then KILL to what is left after `grace`. Returns how many groups were found running.
pub fn stop_leftovers(root: &Path, grace: Duration) -> usize {
    let Ok(dirs) = std::fs::read_dir(root) else { return 0 };
    let groups: Vec<Group> =
        dirs.flatten().filter_map(|d| Group::read(&d.path().join("group"))).filter(Group::alive).collect();
    if groups.is_empty() {
        return 0;
    }
    for g in &groups {
        tracing::warn!(pgid = g.pgid, "stopping the processes of a job left running by the previous run");
        g.signal(nix::sys::signal::Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    while groups.iter().any(Group::alive) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(25));
    }
    for g in groups.iter().filter(|g| g.alive()) {
        tracing::warn!(pgid = g.pgid, "the processes did not stop within the grace period: killing them");
        g.signal(nix::sys::signal::Signal::SIGKILL);
    }
    let until = Instant::now() + Duration::from_secs(2);
    while groups.iter().any(Group::alive) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    groups.len()
}

/// A process group, and what tells it apart from a later one with the same number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    pgid: i32,
    /// The kernel's boot id: after a reboot no group of before runs.
    boot: String,
    /// When the group's leader wrote the record, just after it started: a process with the
    /// leader's number that started later is another one.
    written: std::time::SystemTime,
}

impl Group {
    fn read(path: &Path) -> Option<Group> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.split_whitespace();
        let pgid = parts.next()?.parse().ok()?;
        let boot = parts.next().unwrap_or_default().to_string();
        let written = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        (pgid > 1).then_some(Group { pgid, boot, written })
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pgid), signal);
    }
}

#[cfg(target_os = "linux")]
impl Group {
    /// Whether this group still has a process. Its leader alive (it started before it wrote
    /// the record): yes. Another process with the leader's number: the number was reused, so
    /// this group is gone (the kernel does not reuse a number while a group of it exists). No
    /// leader (or a zombie): any process in a group of that number is one of ours.
    fn alive(&self) -> bool {
        if boot_id().as_deref() != Some(self.boot.as_str()) {
            return false;
        }
        if let Some(leader) = stat(self.pgid) {
            return leader.pgrp == self.pgid
                && started_at(leader.start).is_some_and(|t| t <= self.written + SLACK);
        }
        let Ok(procs) = std::fs::read_dir("/proc") else { return false };
        procs
            .flatten()
            .filter_map(|p| p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .any(|pid| stat(pid).is_some_and(|s| s.pgrp == self.pgid))
    }
}

#[cfg(not(target_os = "linux"))]
impl Group {
    fn alive(&self) -> bool {
        false
    }
}

#[cfg(target_os = "linux")]
fn boot_id() -> Option<String> {
    Some(std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_string())
}

/// What `/proc/<pid>/stat` says of a process: its group and start time (clock ticks since
/// boot). A zombie counts as gone: it runs nothing.
#[cfg(target_os = "linux")]
struct Stat {
    pgrp: i32,
    start: u64,
}

/// How much later than its start a leader may have written its record (a loaded machine).
#[cfg(target_os = "linux")]
const SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// The wall-clock time of `ticks` after boot (`USER_HZ` is 100 on Linux).
#[cfg(target_os = "linux")]
fn started_at(ticks: u64) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let at = std::time::Duration::from_secs(boot) + std::time::Duration::from_millis(ticks * 10);
    Some(std::time::UNIX_EPOCH + at)
}

#[cfg(target_os = "linux")]
fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: read after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), fields[2] field 5 (pgrp), fields[19] field 22 (starttime).
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(Stat { pgrp: fields.get(2)?.parse().ok()?, start: fields.get(19)?.parse().ok()? })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_record_says_whether_every_action_ended() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("7");
        let steps = ActionRecords::begin(&job, 3).unwrap();
        assert_eq!(read(&job), Ended::Incomplete);
        std::fs::write(steps.marker(1), "0\n").unwrap();
        steps.skipped(2).unwrap();
        assert_eq!(read(&job), Ended::Incomplete);
        std::fs::write(steps.marker(3), "").unwrap();
        assert_eq!(read(&job), Ended::Incomplete, "a marker cut short is no end");
        std::fs::write(steps.marker(3), "0\n").unwrap();
        assert_eq!(read(&job), Ended::Succeeded);
        std::fs::write(steps.marker(2), "4\n").unwrap();
        assert_eq!(read(&job), Ended::Failed { action: 2, code: 4 });
        // Beginning again starts from nothing.
        ActionRecords::begin(&job, 1).unwrap();
        assert_eq!(read(&job), Ended::Incomplete);
        remove(&job);
        assert!(!job.exists());
    }

    #[test]
    fn leftover_groups_are_stopped_and_a_reused_number_is_not_ours() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let steps = ActionRecords::begin(&dir.path().join("1"), 1).unwrap();
        // An action whose command ignores TERM, as the wrapper runs it.
        let mut child = std::process::Command::new("sh")
            .args(["-c", WRAPPER, "wh-automata", "trap '' TERM; touch ready; sleep 30 & wait"])
            .arg(steps.marker(1))
            .arg(steps.group_file())
            .current_dir(dir.path())
            .process_group(0)
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while !dir.path().join("ready").exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let group = Group::read(&steps.group_file()).unwrap();
        assert_eq!(group.pgid, child.id() as i32);
        assert!(group.alive());
        // A record written before the process with that number started is someone else's.
        let stranger = Group { written: std::time::UNIX_EPOCH, ..group.clone() };
        assert!(!stranger.alive());
        let elsewhere = Group { boot: "another-boot".into(), ..group.clone() };
        assert!(!elsewhere.alive());
        // TERM is ignored by the command: KILL after the grace.
        let started = Instant::now();
        assert_eq!(stop_leftovers(dir.path(), Duration::from_millis(300)), 1);
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        let _ = child.wait();
        assert!(!group.alive(), "the whole group is gone, the sleep included");
        assert_eq!(stop_leftovers(dir.path(), Duration::from_millis(300)), 0, "nothing left to stop");
        assert_eq!(read(&dir.path().join("1")), Ended::Incomplete, "killed: no end recorded");
    }

    #[test]
    fn the_wrapper_records_the_end_and_passes_the_status_through() {
        let dir = tempfile::tempdir().unwrap();
        let steps = ActionRecords::begin(&dir.path().join("1"), 1).unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", WRAPPER, "wh-automata", "echo \"$0\" > out; exit 3"])
            .arg(steps.marker(1))
            .arg(steps.group_file())
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(std::fs::read_to_string(dir.path().join("out")).unwrap(), "sh\n");
        assert_eq!(read(&dir.path().join("1")), Ended::Failed { action: 1, code: 3 });
        // Without a record, it only runs the command.
        let status = std::process::Command::new("sh")
            .args(["-c", WRAPPER, "wh-automata", "exit 0", "", ""])
            .status()
            .unwrap();
        assert!(status.success());
    }
}
