//! What runs once before anything is attached: privileges and tracefs,
//! the kernel's BTF offsets, probing what the kernel can do, and which
//! master to watch; and, once it is over, dropping what only it needed.

pub mod btf;
pub mod capabilities;
pub mod preflight;
pub mod privileges;
pub mod target;
