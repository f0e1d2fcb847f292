//! prod's integration tests, in one binary (one link, one run): real Postgres
//! (`#[sqlx::test]`: a fresh migrated database per test from DATABASE_URL), real SMTP
//! (aiosmtpd), schemathesis, and the real `payperplay` binary. Services come from
//! `source scripts/start-services.sh`.

mod accounts;
mod accounts_trust;
mod admin_billing;
mod cloud;
mod common;
mod containers;
mod crash;
mod durability;
mod failed_starts;
mod fake_oidc;
mod faults;
mod mail;
mod nodes;
mod oauth;
mod recovery;
mod replay_rules;
mod requests;
mod router;
mod schemathesis;
mod servers;
mod soak;
mod sold_out;
mod submit;
