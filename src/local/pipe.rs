//! `|command` delivery: `/bin/sh -c command` as the user the target belongs to, with the
//! message on its standard input, as local(8) runs it.
//!
//! The input is an mbox entry without quoting (`From SENDER DATE`, the trace fields, the
//! message with LF line ends), which procmail and vacation expect. The environment is a clean
//! one: `HOME`, `USER`, `LOGNAME`, `SHELL`, `PATH=/usr/bin:/bin`, `SENDER`, `RECIPIENT`,
//! `LOCAL`, `DOMAIN`. The exit status decides, by sysexits(3) as sendmail and Postfix read it:
//! 0 delivered; `EX_TEMPFAIL` (75), `EX_OSERR`, `EX_IOERR`, `EX_CANTCREAT` and death by a
//! signal defer; `EX_NOUSER` is 5.1.1; any other status fails. A command that outlives
//! `timeout` is killed with its process group and the delivery deferred. The first line the
//! command printed (stderr, else stdout) goes into the reason.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::status::{EnhancedStatus, Outcome, Reply};

use super::users::{User, group_list};

/// What the command is given.
#[derive(Debug, Clone)]
pub struct PipeJob {
    /// The command line for `/bin/sh -c`.
    pub command: String,
    /// Who it runs as (switched to only when running as root).
    pub user: User,
    /// `SENDER` (empty for `<>`).
    pub sender: String,
    /// `RECIPIENT`: the address delivered to.
    pub recipient: String,
    /// `LOCAL`: its local part.
    pub local: String,
    /// `DOMAIN`: its domain.
    pub domain: String,
    /// How long it may run.
    pub timeout: Duration,
}

/// How much of the command's output is kept for the reason.
const KEEP_OUTPUT: usize = 2048;

fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().filter(|c| !c.is_control()).take(200).collect())
}

/// The outcome of an exit status (sysexits(3)).
fn status_outcome(
    code: Option<i32>,
    signal: Option<i32>,
    said: Option<String>,
    cmd: &str,
) -> Outcome {
    let said = said.map(|s| format!(": {s}")).unwrap_or_default();
    if let Some(sig) = signal {
        return Outcome::deferred(
            EnhancedStatus::new(4, 3, 0),
            format!("command \"{cmd}\" was killed by signal {sig}{said}"),
        );
    }
    let code = code.unwrap_or(-1);
    let (status, temporary) = match code {
        0 => {
            return Outcome::Delivered {
                reply: Reply::new(
                    250,
                    Some(EnhancedStatus::OK),
                    format!("delivered to command {cmd}"),
                )
                .expect("invariant: 250 with 2.0.0 agree"),
            };
        }
        75 | 71 | 74 | 73 => (EnhancedStatus::new(4, 3, 0), true),
        67 => (EnhancedStatus::new(5, 1, 1), false),
        68 => (EnhancedStatus::new(5, 1, 2), false),
        65 => (EnhancedStatus::new(5, 6, 0), false),
        77 => (EnhancedStatus::new(5, 7, 0), false),
        78 => (EnhancedStatus::new(5, 3, 5), false),
        _ => (EnhancedStatus::new(5, 3, 0), false),
    };
    let text = format!("command \"{cmd}\" exited with status {code}{said}");
    if temporary {
        Outcome::deferred(status, text)
    } else {
        Outcome::failed(status, text)
    }
}

/// Runs the command with `input` on its standard input.
pub async fn run(job: &PipeJob, input: Vec<u8>) -> Outcome {
    match spawn_and_wait(job, input).await {
        Ok(o) => o,
        Err(e) => Outcome::deferred(
            EnhancedStatus::new(4, 3, 0),
            format!("cannot run command \"{}\": {e}", job.command),
        ),
    }
}

async fn spawn_and_wait(job: &PipeJob, input: Vec<u8>) -> io::Result<Outcome> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&job.command)
        .env_clear()
        .env("HOME", &job.user.home)
        .env("USER", &job.user.name)
        .env("LOGNAME", &job.user.name)
        .env("SHELL", "/bin/sh")
        .env("PATH", "/usr/bin:/bin")
        .env("SENDER", &job.sender)
        .env("RECIPIENT", &job.recipient)
        .env("LOCAL", &job.local)
        .env("DOMAIN", &job.domain)
        .current_dir(if job.user.home.is_dir() {
            job.user.home.as_path()
        } else {
            std::path::Path::new("/")
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let groups: Vec<libc::gid_t> = group_list(&job.user)?;
        let (uid, gid) = (job.user.uid, job.user.gid);
        // The groups must be set while still root, so the switch is done here rather than by
        // Command::uid/gid (which run before pre_exec closures).
        // SAFETY: setgroups, setgid and setuid are async-signal-safe; the closure only reads
        // values built before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async move {
        if let Some(s) = stdin.as_mut() {
            // A command that does not read all of its input is judged by its exit status.
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
        }
        drop(stdin);
    };
    let read = |pipe: Option<tokio::process::ChildStdout>| async move {
        let mut kept = Vec::new();
        if let Some(mut p) = pipe {
            let mut chunk = [0u8; 1024];
            while let Ok(n) = p.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if kept.len() < KEEP_OUTPUT {
                    kept.extend_from_slice(&chunk[..n.min(KEEP_OUTPUT - kept.len())]);
                }
            }
        }
        kept
    };
    let read_err = async move {
        let mut kept = Vec::new();
        if let Some(p) = stderr.as_mut() {
            let mut chunk = [0u8; 1024];
            while let Ok(n) = p.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if kept.len() < KEEP_OUTPUT {
                    kept.extend_from_slice(&chunk[..n.min(KEEP_OUTPUT - kept.len())]);
                }
            }
        }
        kept
    };
    let all = async {
        let ((), out, err, status) =
            tokio::join!(feed, read(stdout.take()), read_err, child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(job.timeout, all).await {
        Ok((out, err, status)) => {
            let status = status?;
            let said = first_line(&err).or_else(|| first_line(&out));
            Ok(status_outcome(
                status.code(),
                status.signal(),
                said,
                &job.command,
            ))
        }
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: signalling the process group the child leads.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
            Ok(Outcome::deferred(
                EnhancedStatus::new(4, 3, 0),
                format!(
                    "command \"{}\" ran for more than {}s and was killed",
                    job.command,
                    job.timeout.as_secs()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(command: &str) -> PipeJob {
        let me = crate::local::users::SystemUsers;
        let user = crate::local::UserDb::lookup(&me, "root").unwrap().unwrap();
        PipeJob {
            command: command.into(),
            user,
            sender: "aaa@ourtest.com".into(),
            recipient: "bbb@ourtest.com".into(),
            local: "bbb".into(),
            domain: "ourtest.com".into(),
            timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn the_command_reads_the_message_and_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = run(
            &job(&format!(
                "cat > {0}; echo \"$SENDER $RECIPIENT $LOCAL\" >> {0}",
                out.display()
            )),
            b"From x\nhello\n".to_vec(),
        )
        .await;
        assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "From x\nhello\naaa@ourtest.com bbb@ourtest.com bbb\n"
        );
    }

    #[tokio::test]
    async fn exit_statuses_map_to_sysexits_outcomes() {
        let o = run(&job("echo 'try later' >&2; exit 75"), Vec::new()).await;
        match o {
            Outcome::Deferred(d) => assert!(d.text.ends_with("status 75: try later"), "{}", d.text),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&job("exit 67"), Vec::new()).await,
            Outcome::Failed(d) if d.status.to_string() == "5.1.1"
        ));
        assert!(matches!(
            run(&job("exit 1"), Vec::new()).await,
            Outcome::Failed(_)
        ));
        assert!(matches!(
            run(&job("kill -9 $$"), Vec::new()).await,
            Outcome::Deferred(_)
        ));
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_and_deferred() {
        let mut j = job("sleep 30");
        j.timeout = Duration::from_millis(200);
        let start = std::time::Instant::now();
        let o = run(&j, Vec::new()).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(o, Outcome::Deferred(d) if d.text.contains("was killed")));
    }

    #[tokio::test]
    async fn a_command_that_ignores_its_input_is_judged_by_its_status() {
        let o = run(&job("exit 0"), vec![b'x'; 1 << 20]).await;
        assert!(matches!(o, Outcome::Delivered { .. }), "{o:?}");
    }
}
