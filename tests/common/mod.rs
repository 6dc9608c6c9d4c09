//! Support shared by the integration tests.
pub mod capture;
pub mod daemon;
pub mod fixture;
pub mod hostile;
pub mod netns;
pub mod packet;
pub mod peer;
pub mod tcp;
