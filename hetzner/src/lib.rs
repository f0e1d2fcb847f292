//! Hetzner Cloud for PayPerPlay: a client written from the official API description
//! (`client`), the cloud-init user data of worker nodes (`cloud_init`), and a fake
//! Hetzner Cloud API (`fake`, binary `payperplay-fake-hetzner`) that the official
//! Python client accepts, for tests on loopback.

pub mod client;
pub mod clock;
pub mod cloud_init;
pub mod error;
pub mod fake;
pub mod model;

pub use client::{ClientConfig, CreatedVm, HetznerClient, RateLimitStatus, VmOrder};
pub use error::{ErrorClass, HetznerError};
