//! Support shared by the integration tests.
pub mod fixture;
pub mod netns;
pub mod packet;
pub mod tcp;
