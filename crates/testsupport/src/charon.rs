//! An unmodified strongSwan charon in a network namespace, driven through `swanctl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{sh, stop};

/// The VICI socket of a charon whose files live in `dir` (its strongswan.conf must set
/// `plugins { vici { socket = <this> } }`).
pub fn vici_uri(dir: &Path) -> String {
    format!("unix://{}/charon.vici", dir.display())
}

/// A running charon. Dropping it kills the process (SIGKILL: no Delete is sent).
pub struct Charon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Charon {
    /// Start `/usr/lib/ipsec/charon` in namespace `ns` with `dir/strongswan.conf`, in its
    /// own mount namespace with a private /run (so its pid file cannot clash with another
    /// lab's charon), then load `dir/swanctl.conf` (with the credentials next to it) as
    /// soon as its VICI socket answers, within 10 s.
    pub fn start(ns: &str, dir: &Path) -> Result<Charon, String> {
        let d = dir.display();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "unshare", "-m", "--propagation", "private"])
            .args(["sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && STRONGSWAN_CONF={d}/strongswan.conf exec /usr/lib/ipsec/charon"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("charon in {ns}: {e}"))?;
        let charon = Charon {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let conf = dir.join("swanctl.conf");
        let conf = conf.to_string_lossy();
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            match charon.swanctl(&["--load-all", "--file", &conf]) {
                Ok(_) => return Ok(charon),
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    return Err(format!("charon in {ns}: {e}"))
                }
                Err(_) => {}
            }
        }
    }

    pub fn uri(&self) -> String {
        vici_uri(&self.dir)
    }

    /// `swanctl ARGS --uri <this charon>`.
    pub fn swanctl(&self, args: &[&str]) -> Result<String, String> {
        let uri = self.uri();
        let mut a = vec!["swanctl"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--uri", &uri]);
        sh(&a)
    }

    /// `swanctl` in the background, for commands that wait for an exchange the test itself
    /// has to answer (e.g. `--terminate`).
    pub fn swanctl_bg(&self, args: &[&str]) -> Result<Child, String> {
        Command::new("swanctl")
            .args(args)
            .args(["--uri", &self.uri()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("swanctl {args:?}: {e}"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the gateway "crashes" without sending Delete.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 2 s.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop(c);
        }
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.kill();
    }
}
