//! Where the kernel structs' fields are, read from the running kernel's BTF:
//! the programs read a few fields with bpf_probe_read_kernel (aya has no
//! CO-RE relocations), at the offsets userspace finds here and writes into
//! their configuration before attaching.

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};
use exporter_ebpf::abi::Offsets;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading the kernel's BTF from {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("the kernel's BTF has no struct {0}")]
    MissingStruct(String),
    #[error("the kernel's BTF has no field {field} in struct {strukt}")]
    MissingField { strukt: String, field: String },
}

/// The running kernel's BTF (`/sys/kernel/btf/vmlinux`).
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<KernelBtf, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(KernelBtf { btf })
    }

    /// Whether the kernel has a function called `name` (not inlined away).
    pub fn has_func(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .is_ok_and(|types| types.iter().any(|t| matches!(t, Type::Func(_))))
    }

    /// The byte offset of `path` (fields separated by dots, e.g.
    /// `path.dentry`) in `struct strukt`, looking through anonymous structs
    /// and unions as C does.
    pub fn offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut current = self.named_struct(strukt)?;
        let mut offset_bits = 0;
        let mut fields = path.split('.').peekable();
        while let Some(field) = fields.next() {
            let (bits, type_id) =
                self.find_member(&current, field)
                    .ok_or_else(|| BtfError::MissingField {
                        strukt: strukt.to_string(),
                        field: path.to_string(),
                    })?;
            offset_bits += bits;
            if fields.peek().is_some() {
                current = self
                    .struct_of(type_id)
                    .ok_or_else(|| BtfError::MissingField {
                        strukt: strukt.to_string(),
                        field: path.to_string(),
                    })?;
            }
        }
        Ok(offset_bits / 8)
    }

    /// The offsets the programs need ([`Offsets`]).
    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        Ok(Offsets {
            task_pid: self.offset("task_struct", "pid")?,
            task_tgid: self.offset("task_struct", "tgid")?,
            task_exit_code: self.offset("task_struct", "exit_code")?,
            task_signal: self.offset("task_struct", "signal")?,
            task_files: self.offset("task_struct", "files")?,
            signal_live: self.offset("signal_struct", "live")?,
            files_fdt: self.offset("files_struct", "fdt")?,
            fdt_fd: self.offset("fdtable", "fd")?,
            file_private_data: self.offset("file", "private_data")?,
            socket_sk: self.offset("socket", "sk")?,
            sk_family: self.offset("sock_common", "skc_family")?,
            sk_num: self.offset("sock_common", "skc_num")?,
            unix_dentry: self.offset("unix_sock", "path.dentry")?,
            dentry_inode: self.offset("dentry", "d_inode")?,
            inode_ino: self.offset("inode", "i_ino")?,
            file_inode: self.offset("file", "f_inode")?,
        })
    }

    fn named_struct(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::MissingStruct(name.to_string()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::MissingStruct(name.to_string()))
    }

    /// The struct or union behind a member's type, through typedefs and
    /// qualifiers.
    fn struct_of(&self, mut type_id: u32) -> Option<btf_rs::Struct> {
        for _ in 0..16 {
            match self.btf.resolve_type_by_id(type_id).ok()? {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                t @ (Type::Typedef(_) | Type::Volatile(_) | Type::Const(_) | Type::Restrict(_)) => {
                    type_id = t.as_btf_type()?.get_type_id()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// `field`'s bit offset in `s` and its type, searching anonymous members.
    fn find_member(&self, s: &btf_rs::Struct, field: &str) -> Option<(u32, u32)> {
        for member in &s.members {
            let name = self.btf.resolve_name(member).unwrap_or_default();
            let type_id = member.get_type_id()?;
            if name == field {
                return Some((member.bit_offset(), type_id));
            }
            if name.is_empty() {
                if let Some(inner) = self.struct_of(type_id) {
                    if let Some((bits, id)) = self.find_member(&inner, field) {
                        return Some((member.bit_offset() + bits, id));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against this machine's kernel: layouts the kernel has kept for years.
    #[test]
    fn offsets_of_the_running_kernel() {
        let path = Path::new(crate::startup::preflight::KERNEL_BTF);
        if !path.exists() {
            panic!(
                "{} is missing: the exporter needs kernel BTF",
                path.display()
            );
        }
        let btf = KernelBtf::load(path).unwrap();
        let o = btf.offsets().unwrap();
        assert_eq!(o.sk_family, 16, "sock_common.skc_family");
        assert_eq!(o.sk_num, 14, "sock_common.skc_num, in an anonymous union");
        assert_eq!(o.signal_live, 4, "signal_struct.live after sigcnt");
        assert!(
            o.unix_dentry > o.sk_num,
            "unix_sock.path.dentry after its sock"
        );
        assert!(o.task_tgid == o.task_pid + 4);
        assert!(matches!(
            btf.offset("task_struct", "no_such_field"),
            Err(BtfError::MissingField { .. })
        ));
        assert!(matches!(
            btf.offset("no_such_struct", "x"),
            Err(BtfError::MissingStruct(_))
        ));
        assert!(btf.has_func("tcp_sendmsg"));
        assert!(!btf.has_func("no_such_function_anywhere"));
    }
}
