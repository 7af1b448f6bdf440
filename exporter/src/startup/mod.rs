//! What runs once before anything is attached: privileges and tracefs,
//! the kernel's BTF offsets, probing what the kernel can do, and which
//! master to watch.

pub mod btf;
pub mod capabilities;
pub mod preflight;
pub mod target;
