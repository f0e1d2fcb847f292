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
}

impl WorkerBootstrap {
    /// The user data for this node, from [`WORKER_TEMPLATE`].
    pub fn user_data(&self) -> Result<String, HetznerError> {
        self.render(WORKER_TEMPLATE)
    }

    /// The user data for this node, from another template with the same placeholders.
    pub fn render(&self, template: &str) -> Result<String, HetznerError> {
        let key_ok = !self.ssh_public_key.trim().is_empty()
            && self
                .ssh_public_key
                .trim()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" +/=@._-".contains(&b));
        if !key_ok {
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
        if value.contains(['\n', '\r']) {
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
        }
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
