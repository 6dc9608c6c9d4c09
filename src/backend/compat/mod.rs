//! The compat backend, for stock kernels: each app gets a veth port whose kernel side carries
//! the transport's egress program ([`port`]), and the gen pump runs the ACK generator with
//! live frames ([`pump`]).
pub mod port;
pub mod pump;
