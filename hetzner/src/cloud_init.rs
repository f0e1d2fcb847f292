//! The worker node's cloud-init user data (`deploy/cloud-init/worker.yaml`) with its
//! placeholders filled.

use std::collections::BTreeMap;

use crate::client::USER_DATA_BYTES_MAX;
use crate::error::HetznerError;

/// `deploy/cloud-init/worker.yaml`, compiled in.
pub const WORKER_TEMPLATE: &str = include_str!("../../deploy/cloud-init/worker.yaml");

/// The values of the worker template's placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerBootstrap {
    pub platform: String,
    pub node_id: u64,
    /// One line, e.g. `ssh-ed25519 AAAA... payperplay`.
    pub ssh_public_key: String,
    /// Where the node POSTs readiness; empty for the marker file alone.
    pub ready_url: String,
    /// The VM's SSH host key, made by the platform (which pins its public half), or
    /// `None` to keep the image's own.
    pub host_key: Option<HostKey>,
}

/// An Ed25519 SSH host key for one VM, in OpenSSH form.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` ... `-----END OPENSSH PRIVATE KEY-----`.
    pub private_openssh: String,
    /// One line, `ssh-ed25519 AAAA...`.
    pub public_openssh: String,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey")
            .field("private_openssh", &"[redacted]")
            .field("public_openssh", &self.public_openssh)
            .finish()
    }
}

/// Placeholders whose value is a block of lines (made by this module, checked line by
/// line), not one line.
const BLOCK_PLACEHOLDERS: [&str; 1] = ["ssh_host_keys"];

/// What `{{ssh_host_keys}}` becomes without a host key from the platform.
const NO_HOST_KEY: &str = "# SSH host keys: the image's own (the platform pins configured keys or learns the first)";

/// cloud-init's `ssh_keys` block for `key` (its `ed25519_private` block scalar is what
/// the fake Hetzner API reads back, [`host_key_of_user_data`]).
fn host_key_block(key: &HostKey) -> Result<String, HetznerError> {
    let public = key.public_openssh.trim();
    let public_ok = public.starts_with("ssh-ed25519 ") && one_line_key(public);
    let private_lines: Vec<&str> = key.private_openssh.trim().lines().collect();
    let private_ok = private_lines.first() == Some(&"-----BEGIN OPENSSH PRIVATE KEY-----")
        && private_lines.last() == Some(&"-----END OPENSSH PRIVATE KEY-----")
        && private_lines[1..private_lines.len() - 1]
            .iter()
            .all(|line| !line.is_empty() && line.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    if !public_ok || !private_ok {
        return Err(HetznerError::Config(
            "the VM's SSH host key must be an OpenSSH Ed25519 key pair (private block and one public line)".to_owned(),
        ));
    }
    let mut block = String::from("ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n");
    for line in private_lines {
        block.push_str("    ");
        block.push_str(line);
        block.push('\n');
    }
    block.push_str("  ed25519_public: ");
    block.push_str(public);
    Ok(block)
}

/// One line of letters, digits, spaces and `+/=@._-` (a public key with its comment).
fn one_line_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" +/=@._-".contains(&b))
}

/// The private host key a worker's user data carries (`ssh_keys.ed25519_private`),
/// as the fake Hetzner API reads it to give a VM that host key.
pub fn host_key_of_user_data(user_data: &str) -> Option<String> {
    let mut lines = user_data
        .lines()
        .skip_while(|line| line.trim_end() != "  ed25519_private: |");
    lines.next()?;
    let mut key = String::new();
    for line in lines {
        let Some(content) = line.strip_prefix("    ") else {
            break;
        };
        key.push_str(content);
        key.push('\n');
    }
    (!key.is_empty()).then_some(key)
}

impl WorkerBootstrap {
    /// The user data for this node, from [`WORKER_TEMPLATE`].
    pub fn user_data(&self) -> Result<String, HetznerError> {
        self.render(WORKER_TEMPLATE)
    }

    /// The user data for this node, from another template with the same placeholders.
    pub fn render(&self, template: &str) -> Result<String, HetznerError> {
        if !one_line_key(self.ssh_public_key.trim()) {
            return Err(HetznerError::Config(
                "the SSH public key must be one non-empty line of letters, digits, spaces and +/=@._-".to_owned(),
            ));
        }
        let url_ok = self
            .ready_url
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"'\"\\`$".contains(&b));
        if !url_ok {
            return Err(HetznerError::Config(format!(
                "ready URL {:?} holds characters the template cannot carry (quotes, $, `, \\ or spaces)",
                self.ready_url
            )));
        }
        let values = BTreeMap::from([
            ("platform", self.platform.clone()),
            ("node_id", self.node_id.to_string()),
            ("ssh_public_key", self.ssh_public_key.trim().to_owned()),
            ("ready_url", self.ready_url.clone()),
            (
                "ssh_host_keys",
                match &self.host_key {
                    Some(key) => host_key_block(key)?,
                    None => NO_HOST_KEY.to_owned(),
                },
            ),
        ]);
        render(template, &values)
    }
}

/// Replaces every `{{name}}` in `template` with its value. An unknown name, an unclosed
/// `{{`, a value with a line break, or a result over Hetzner's 32 KiB is an error.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, HetznerError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(HetznerError::Config("user data template: `{{` without `}}`".to_owned()));
        };
        let name = after[..end].trim();
        let Some(value) = values.get(name) else {
            return Err(HetznerError::Config(format!(
                "user data template: unknown placeholder {{{{{name}}}}}"
            )));
        };
        if value.contains(['\n', '\r']) && !BLOCK_PLACEHOLDERS.contains(&name) {
            return Err(HetznerError::Config(format!(
                "user data value for {name} holds a line break"
            )));
        }
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if out.len() > USER_DATA_BYTES_MAX {
        return Err(HetznerError::Config(format!(
            "user data is {} bytes, Hetzner takes at most {USER_DATA_BYTES_MAX}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap() -> WorkerBootstrap {
        WorkerBootstrap {
            platform: "payperplay".into(),
            node_id: 17,
            ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB payperplay@control".into(),
            ready_url: "https://control.example/v1/nodes/17/ready".into(),
            host_key: None,
        }
    }

    /// A made-up key pair of the right shape (the template checks shape, not maths).
    fn host_key() -> HostKey {
        HostKey {
            private_openssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n\
                              AAAAAAAAABAAAAMwAAAAtzc2gtZW=\n-----END OPENSSH PRIVATE KEY-----\n"
                .into(),
            public_openssh: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfNode17".into(),
        }
    }

    #[test]
    fn a_host_key_from_the_platform_replaces_the_images_and_reads_back() {
        let without = bootstrap().user_data().unwrap();
        assert!(!without.contains("\nssh_keys:"), "{without}");
        assert!(without.contains(NO_HOST_KEY));
        let mut with = bootstrap();
        with.host_key = Some(host_key());
        let user_data = with.user_data().unwrap();
        assert!(
            user_data.contains(
                "ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n    \
                 -----BEGIN OPENSSH PRIVATE KEY-----\n    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
            ),
            "{user_data}"
        );
        assert!(user_data.contains("\n  ed25519_public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfNode17\n"));
        assert!(
            user_data.contains("\ndisable_root: true\nssh_deletekeys: true\n"),
            "a top-level key"
        );
        assert_eq!(host_key_of_user_data(&user_data), Some(host_key().private_openssh));
        assert_eq!(host_key_of_user_data(&without), None);
        let mut broken = host_key();
        broken.private_openssh =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nruncmd: [reboot]\n-----END OPENSSH PRIVATE KEY-----".into();
        with.host_key = Some(broken);
        assert!(with.user_data().unwrap_err().to_string().contains("host key"));
    }

    #[test]
    fn the_worker_template_fills_every_placeholder() {
        let user_data = bootstrap().user_data().unwrap();
        assert!(user_data.starts_with("#cloud-config\n"));
        assert!(!user_data.contains("{{"), "a placeholder is left");
        assert!(user_data.contains("      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB payperplay@control\n"));
        assert!(user_data.contains("hostname: payperplay-node-17\n"));
        assert!(user_data.contains("url='https://control.example/v1/nodes/17/ready'"));
        assert!(user_data.contains("docker.io"));
        assert!(user_data.contains("/var/lib/payperplay/ready"));
    }

    #[test]
    fn a_key_that_could_break_the_yaml_or_an_unknown_placeholder_is_refused() {
        let mut bad_key = bootstrap();
        bad_key.ssh_public_key = "ssh-ed25519 AAAA\nruncmd: [reboot]".into();
        assert!(bad_key.user_data().is_err());
        let mut bad_url = bootstrap();
        bad_url.ready_url = "http://x/'; rm -rf /".into();
        assert!(bad_url.user_data().unwrap_err().to_string().contains("ready URL"));
        let error = bootstrap().render("a {{nope}} b").unwrap_err();
        assert!(error.to_string().contains("{{nope}}"), "{error}");
        assert!(bootstrap().render("a {{platform").is_err());
    }

    #[test]
    fn user_data_over_32_kib_is_refused() {
        let template = format!("#cloud-config\n# {}\n", "x".repeat(USER_DATA_BYTES_MAX));
        let error = bootstrap().render(&template).unwrap_err();
        assert!(error.to_string().contains("32768"), "{error}");
    }
}
