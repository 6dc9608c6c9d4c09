//! Support shared by the integration tests.
pub mod daemon;
pub mod fixture;
pub mod hostile;
pub mod netns;
pub mod packet;
pub mod tcp;
