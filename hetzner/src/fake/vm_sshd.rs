//! A fake VM's own SSH server: when the fake is given an sshd binary (`vm_sshd`) and a
//! VM's user data carries an SSH host key (cloud-init's `ssh_keys.ed25519_private`, as
//! the worker template writes it), the VM's SSH endpoint is a new sshd presenting that
//! host key, as cloud-init would make the real VM's sshd do. It ends with the VM.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::config::VmSshdConfig;

/// A running sshd for one VM; killed, and its files removed, on drop.
#[derive(Debug)]
pub struct VmSshd {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl VmSshd {
    /// Starts `config.binary` on `ip` and a free port with `host_key` (OpenSSH private
    /// key text). It may take a moment to listen; a client retries.
    pub fn start(config: &VmSshdConfig, ip: &str, vm_id: u64, host_key: &str) -> Result<VmSshd, String> {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free port for VM {vm_id}'s sshd on {ip}: {error}"))?
            .port();
        let base = match &config.dir {
            Some(dir) => PathBuf::from(dir),
            None => std::env::temp_dir(),
        };
        let dir = base.join(format!("fake-hetzner-vm-{}-{vm_id}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let key_path = dir.join("ssh_host_ed25519_key");
        // sshd refuses a host key others may read.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .and_then(|mut file| file.write_all(host_key.as_bytes()))
            .map_err(|error| format!("{}: {error}", key_path.display()))?;
        let sshd_config = format!(
            "ListenAddress {ip}:{port}\nHostKey {key}\nPidFile {dir}/sshd.pid\nAuthorizedKeysFile {authorized}\n\
             PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowStreamLocalForwarding yes\n\
             AllowTcpForwarding yes\nMaxSessions 64\nMaxStartups 64:30:128\nSetEnv HOME={dir}\n",
            key = key_path.display(),
            dir = dir.display(),
            authorized = config.authorized_keys_file,
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, sshd_config).map_err(|error| format!("{}: {error}", config_path.display()))?;
        let child = Command::new(&config.binary)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("{} does not start: {error}", config.binary))?;
        Ok(VmSshd { child, dir, port })
    }
}

impl Drop for VmSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
