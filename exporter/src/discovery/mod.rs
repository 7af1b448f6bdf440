//! Discovery of every Gunicorn master on the host (issue 13).
//!
//! - `identity`: pure rules over what /proc shows of a process (is it an
//!   arbiter, its app name, container and pod, namespace pid, labels copied
//!   from its environment), plus the thin reads of /proc that feed them.
//!
//! Not wired into `main` yet: the set of masters and the kernel's exec
//! events come next (see the README's Discovery section).

pub mod identity;
pub mod scan;
