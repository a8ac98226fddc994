//! The processes of a private instance: found by the `MAIL_CONFIG` environment variable that
//! the postfix command sets and that master hands to every daemon it starts, so none is missed
//! even when `postfix stop` fails or the master died first. Also the clean-up of instances a
//! killed test run left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Every process whose environment says `MAIL_CONFIG=<config_dir>`.
pub fn processes_of(config_dir: &Path) -> Vec<libc::pid_t> {
    let wanted = format!("MAIL_CONFIG={}", config_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            // Processes come and go while we look; an unreadable one is not ours.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
        })
        .collect()
}

/// SIGKILLs every process of the instance until none is left (bounded: 5 s). Returns what is
/// still running after that.
pub fn kill_all(config_dir: &Path) -> Vec<libc::pid_t> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_of(config_dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        for pid in &left {
            // SAFETY: kill(2) with a pid read from /proc; at worst it is gone (ESRCH).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This process as the owner of an instance: its pid and start time (so a reused pid is not
/// mistaken for a live owner).
pub fn owner_stamp() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or_default())
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may contain spaces: count fields after its end.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_string)
}

/// `None` when the stamp is not (yet) whole: the owner may be writing it right now.
fn owner_alive(stamp: &str) -> Option<bool> {
    let mut parts = stamp.split_whitespace();
    let (Some(pid), Some(started)) = (parts.next(), parts.next()) else {
        return None;
    };
    let pid = pid.parse::<u32>().ok()?;
    Some(start_time(pid).is_some_and(|now| now == started))
}

/// Stops and removes the instances under `base` whose owning test process is gone (a test
/// run killed by Ctrl-C or a timeout never ran its destructors). An instance directory without
/// an owner file yet is being created; it is left alone unless it is over an hour old.
pub fn sweep_orphans(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for dir in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if !dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(super::INSTANCE_PREFIX))
        {
            continue;
        }
        // A stamp being written reads empty or cut short: it is judged like a missing one,
        // or a sweep racing the start of an instance would remove the live instance's files.
        let orphan = match std::fs::read_to_string(dir.join(super::OWNER_FILE))
            .ok()
            .and_then(|stamp| owner_alive(&stamp))
        {
            Some(alive) => !alive,
            None => older_than(&dir, Duration::from_secs(3600)),
        };
        if orphan {
            let config_dir: PathBuf = dir.join("etc");
            kill_all(&config_dir);
            // Another test may sweep the same orphan at the same moment.
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|elapsed| elapsed > age)
}
