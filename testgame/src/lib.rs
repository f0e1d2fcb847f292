//! The test game server is a binary (`src/main.rs`); this library only offers, behind the
//! `test-support` feature, what tests here and in other crates (the router's) use to run
//! it and the real clients: [`test_support`].

#[cfg(feature = "test-support")]
pub mod test_support;
