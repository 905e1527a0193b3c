//! The faults: when they strike (decided up front from a seed), `aiq serve` run under a
//! supervisor that restarts it whenever it dies, and SIGKILL plus restart of the Kafka
//! broker and the Cassandra node that `scripts/services` started for the chaos run.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL `aiq serve` (every role); the supervisor restarts it at once.
    Serve,
    /// SIGKILL the Kafka broker, restart it after a pause.
    Kafka,
    /// SIGKILL the Cassandra node, restart it after a pause.
    Cassandra,
}

/// Faults never strike closer together than this: each finds the system restarted.
pub const MIN_GAP: Duration = Duration::from_secs(4);

/// `serve`, `kafka` and `cassandra` faults at seeded random moments between 5 % and
/// 90 % of `window`, sorted, at least [`MIN_GAP`] apart where the window allows.
pub fn plan(
    window: Duration,
    serve: u32,
    kafka: u32,
    cassandra: u32,
    seed: u64,
) -> Vec<(Duration, Fault)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (lo, hi) = (window.as_secs_f64() * 0.05, window.as_secs_f64() * 0.9);
    let mut faults: Vec<(f64, Fault)> = std::iter::repeat_n(Fault::Serve, serve as usize)
        .chain(std::iter::repeat_n(Fault::Kafka, kafka as usize))
        .chain(std::iter::repeat_n(Fault::Cassandra, cassandra as usize))
        .map(|f| (rng.random_range(lo..=hi.max(lo)), f))
        .collect();
    faults.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Spread: push each one at least MIN_GAP after the one before.
    let gap = MIN_GAP.as_secs_f64();
    for i in 1..faults.len() {
        let earliest = faults[i - 1].0 + gap;
        if faults[i].0 < earliest {
            faults[i].0 = earliest;
        }
    }
    faults
        .into_iter()
        .map(|(s, f)| (Duration::from_secs_f64(s), f))
        .collect()
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Struck {
    pub fault: Fault,
    /// Seconds after the start of the drive.
    pub at_s: f64,
    /// The process killed.
    pub pid: Option<u32>,
    /// Seconds until the service answered again (Kafka, Cassandra), after the pause.
    pub restart_s: Option<f64>,
    pub note: String,
}

/// Sends `signal` (`KILL`, `TERM`) to `pid`, a process this program started (or the
/// chaos run's own services script did).
fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `aiq serve` under a supervisor thread: started, and started again whenever it ends
/// until [`Supervisor::stop`].
pub struct Supervisor {
    pid: Arc<Mutex<Option<u32>>>,
    stop: Arc<AtomicBool>,
    pub restarts: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// How `aiq serve` is started.
#[derive(Debug, Clone)]
pub struct ServeCommand {
    pub bin: PathBuf,
    /// Variables set for it (on top of the environment).
    pub env: Vec<(String, String)>,
    /// Variables taken away (e.g. the services script's, which aiq refuses).
    pub env_remove: Vec<String>,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
    /// Where the current pid is written (for a script's clean-up).
    pub pid_file: Option<PathBuf>,
}

impl Supervisor {
    pub fn start(cmd: ServeCommand) -> std::io::Result<Supervisor> {
        let pid = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU64::new(0));
        let (p, s, r) = (Arc::clone(&pid), Arc::clone(&stop), Arc::clone(&restarts));
        // Fail early if the binary cannot start at all.
        let first = spawn(&cmd)?;
        let thread = std::thread::spawn(move || {
            let mut child = Some(first);
            loop {
                let Some(mut c) = child.take() else { break };
                set(&p, Some(c.id()), &cmd);
                let _ = c.wait();
                set(&p, None, &cmd);
                if s.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
                if s.load(Ordering::SeqCst) {
                    break;
                }
                r.fetch_add(1, Ordering::Relaxed);
                match spawn(&cmd) {
                    Ok(c) => child = Some(c),
                    Err(e) => {
                        eprintln!("chaos: restarting aiq serve failed: {e}; trying again in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                        child = spawn(&cmd).ok();
                    }
                }
            }
        });
        Ok(Supervisor {
            pid,
            stop,
            restarts,
            thread: Some(thread),
        })
    }

    /// The pid of the running `aiq serve`, if one runs.
    pub fn pid(&self) -> Option<u32> {
        *self
            .pid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// SIGKILLs the running `aiq serve`; the supervisor starts another. Returns its pid.
    pub fn kill9(&self) -> Option<u32> {
        // The pid stays ours until the supervisor reaps it, so it cannot be reused.
        let pid = self.pid()?;
        signal(pid, "KILL").then_some(pid)
    }

    /// SIGKILLs the running `aiq serve` and stops supervising it: it stays dead (a
    /// scale-down). Returns its pid.
    pub fn kill9_for_good(&self) -> Option<u32> {
        self.stop.store(true, Ordering::SeqCst);
        self.kill9()
    }

    /// Stops supervising: SIGTERM, then SIGKILL after 30 s.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = self.pid() {
            signal(pid, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(pid) = self.pid() {
            signal(pid, "KILL");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(pid) = self.pid() {
                signal(pid, "KILL");
            }
        }
    }
}

fn set(slot: &Mutex<Option<u32>>, pid: Option<u32>, cmd: &ServeCommand) {
    *slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = pid;
    if let Some(f) = &cmd.pid_file {
        let _ = match pid {
            Some(p) => std::fs::write(f, format!("{p}\n")),
            None => std::fs::remove_file(f),
        };
    }
}

fn spawn(cmd: &ServeCommand) -> std::io::Result<std::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cmd.log)?;
    let mut c = Command::new(&cmd.bin);
    c.arg("serve");
    for k in &cmd.env_remove {
        c.env_remove(k);
    }
    c.envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    c.spawn()
}

/// The Kafka broker and Cassandra node of `scripts/services` in its own state folder.
#[derive(Debug, Clone)]
pub struct Services {
    pub script: PathBuf,
    /// Variables for the script: AIQ_SERVICES_DIR, the ports, the heaps.
    pub env: Vec<(String, String)>,
    /// The state folder (`<dir>/<service>/pid`).
    pub dir: PathBuf,
}

impl Services {
    fn name(f: Fault) -> &'static str {
        match f {
            Fault::Kafka => "kafka",
            Fault::Cassandra => "cassandra",
            Fault::Serve => "serve",
        }
    }

    /// SIGKILLs the service; returns its pid.
    pub fn kill9(&self, f: Fault) -> Result<u32, String> {
        let file = self.dir.join(Self::name(f)).join("pid");
        let pid: u32 = std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if signal(pid, "KILL") {
            Ok(pid)
        } else {
            Err(format!("kill -KILL {pid} failed"))
        }
    }

    /// `scripts/services up <service>`: returns once it answers again.
    pub fn up(&self, f: Fault) -> Result<(), String> {
        let out = Command::new(&self.script)
            .args(["up", Self::name(f)])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", self.script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} up {}: {}",
                self.script.display(),
                Self::name(f),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn faults_fall_in_the_window_sorted_and_apart() {
        let w = Duration::from_secs(250);
        let p = plan(w, 20, 2, 1, 7);
        assert_eq!(p.len(), 23);
        assert_eq!(p.iter().filter(|(_, f)| *f == Fault::Kafka).count(), 2);
        assert_eq!(p.iter().filter(|(_, f)| *f == Fault::Cassandra).count(), 1);
        assert!(p.first().unwrap().0 >= Duration::from_secs_f64(12.5));
        for pair in p.windows(2) {
            assert!(
                pair[1].0 >= pair[0].0 + MIN_GAP - Duration::from_millis(1),
                "{p:?}"
            );
        }
        // 23 faults 4 s apart fit in 5 %..90 % of 250 s, give or take the spreading.
        assert!(p.last().unwrap().0 < w, "{p:?}");
        assert_eq!(p, plan(w, 20, 2, 1, 7));
        assert_ne!(p, plan(w, 20, 2, 1, 8));
        assert!(plan(w, 0, 0, 0, 1).is_empty());
    }
}
