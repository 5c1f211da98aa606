//! Real OpenSSH servers for the tests (Debian's `openssh-server`), each on a free loopback port
//! with a host key of its own, taking the test's client key; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub port: u16,
    /// Its public host key: `ssh-ed25519 AAAA...`.
    pub host_key: String,
}

/// A client key pair in `dir`: the private key's path, the public key's line.
pub fn client_key(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("id_ed25519");
    keygen(&path);
    (path.clone(), std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_string())
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

impl Sshd {
    /// Starts an sshd named `name` in `dir` that lets in `client` (a public key line) as the
    /// user running the tests.
    pub fn start(dir: &Path, name: &str, client: &str) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the remote deploy tests need Debian's openssh-server (apt-get install openssh-server)"
        );
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let key = home.join("host_ed25519");
        keygen(&key);
        let host_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        std::fs::write(home.join("authorized_keys"), format!("{client}\n")).unwrap();
        // Privilege separation's directory, which the service would make.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = crate::standin::free_addr().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nAuthorizedKeysFile {auth}\nPidFile {pid}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nUsePAM no\nLogLevel ERROR\n",
            key = key.display(),
            auth = home.join("authorized_keys").display(),
            pid = home.join("sshd.pid").display(),
        );
        std::fs::write(home.join("sshd_config"), config).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(home.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "sshd did not listen: {}",
                std::fs::read_to_string(home.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd { child, port, host_key }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
