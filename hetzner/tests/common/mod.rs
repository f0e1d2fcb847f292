//! Starts the `payperplay-fake-hetzner` binary on a free loopback port for a test and
//! stops it when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use payperplay_hetzner::{ClientConfig, HetznerClient};
use secrecy::SecretString;

pub const TOKEN: &str = "test-token-5f1c";

pub struct FakeHetzner {
    child: Child,
    pub base_url: String,
    _config_dir: Option<tempdir::TempDir>,
}

mod tempdir {
    /// A directory removed on drop (no extra crate for one file).
    pub struct TempDir(pub std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl FakeHetzner {
    /// Starts the fake with the default catalog and fast actions (100 ms).
    pub fn start() -> FakeHetzner {
        FakeHetzner::start_with(|_| {})
    }

    /// Starts the fake with the configuration `adjust` leaves (written to a TOML file,
    /// so the binary's file loading is exercised too).
    pub fn start_with(adjust: impl FnOnce(&mut payperplay_hetzner::fake::FakeConfig)) -> FakeHetzner {
        let dir = std::env::temp_dir().join(format!(
            "fake-hetzner-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config_path = dir.join("fake.toml");
        let mut config = payperplay_hetzner::fake::FakeConfig {
            token: TOKEN.to_owned(),
            action_delay_ms: 100,
            ..Default::default()
        };
        adjust(&mut config);
        let text = toml::to_string(&config).expect("config to TOML");
        std::fs::write(&config_path, text).expect("write fake config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_payperplay-fake-hetzner"))
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start payperplay-fake-hetzner");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the fake's first line");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the fake printed {line:?} instead of `listening on ADDR`"))
            .to_owned();
        FakeHetzner {
            child,
            base_url: format!("http://{address}"),
            _config_dir: Some(tempdir::TempDir(dir)),
        }
    }

    pub fn api_url(&self) -> String {
        format!("{}/v1", self.base_url)
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.api_url(), SecretString::from(TOKEN));
        config.action_poll_ms_min = 20;
        config.action_poll_ms_max = 100;
        config.action_wait_ms_max = 10_000;
        config.action_batch_gap_ms = 20;
        config.transient_backoff_ms = 10;
        config
    }

    pub fn client(&self) -> HetznerClient {
        HetznerClient::new(self.client_config()).expect("client")
    }

    pub async fn control(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/__fake/{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .expect("control request");
        assert_eq!(
            response.status().as_u16(),
            204,
            "control {path}: {:?}",
            response.text().await
        );
    }

    pub async fn get_control(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}/__fake/{path}", self.base_url))
            .send()
            .await
            .expect("control request")
            .json()
            .await
            .expect("control JSON")
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for FakeHetzner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
