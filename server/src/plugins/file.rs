//! Reading a plugin file safely before anything maps it (no `unsafe` here).
//!
//! `dlopen` maps a library's segments straight from its file: a truncated file maps pages past
//! its end, and the first touch of one kills the process with `SIGBUS`; a FIFO blocks `open`
//! forever. So the host never hands the operator's file to `dlopen`. [`read_library`] refuses
//! anything but a regular file of a sane size (without opening FIFOs, sockets or devices), reads
//! the bytes once, and [`check_elf`] checks that they are a complete shared object for this
//! machine: the ELF header, and every program header, segment and section inside the file. The
//! loader then writes exactly these bytes to a private copy and maps that (see `library.rs`).
//!
//! This catches truncated, empty, foreign and non-ELF files. It is not a sandbox: a well-formed
//! library still runs its code in the server (plugins are trusted code, see
//! docs/security/plugins.md).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use super::PluginError;

/// Smallest file that can hold an ELF header.
pub(crate) const MIN_LIBRARY_BYTES: u64 = 64;
/// Largest plugin file the host reads (256 MiB; real plugins are a few MiB, debug builds tens).
pub(crate) const MAX_LIBRARY_BYTES: u64 = 256 << 20;

fn invalid(path: &Path, message: impl Into<String>) -> PluginError {
    PluginError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// What kind of non-regular file `meta` describes.
fn file_type_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_char_device() {
            return "a character device";
        }
    }
    "not a regular file"
}

fn check_meta(path: &Path, meta: &Metadata) -> Result<u64, PluginError> {
    if !meta.is_file() {
        return Err(invalid(
            path,
            format!(
                "is {}, not a regular file (it was not opened)",
                file_type_name(meta)
            ),
        ));
    }
    let len = meta.len();
    if len == 0 {
        return Err(invalid(path, "is empty (0 bytes)"));
    }
    if len < MIN_LIBRARY_BYTES {
        return Err(invalid(
            path,
            format!("is {len} bytes, too small for an ELF header ({MIN_LIBRARY_BYTES} bytes)"),
        ));
    }
    if len > MAX_LIBRARY_BYTES {
        return Err(invalid(
            path,
            format!("is {len} bytes, more than the {MAX_LIBRARY_BYTES}-byte limit"),
        ));
    }
    Ok(len)
}

fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // If the file was swapped for a FIFO after the check, opening it returns at once
        // instead of waiting for a writer; the `fstat` below then refuses it.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// Reads a plugin file once, refusing anything that is not a regular file of
/// [`MIN_LIBRARY_BYTES`]..=[`MAX_LIBRARY_BYTES`] bytes. A FIFO, socket or device is refused from
/// its metadata, before any `open` (symlinks are followed: a link to a regular file is fine).
pub(crate) fn read_library(path: &Path) -> Result<Vec<u8>, PluginError> {
    let io = |e: std::io::Error| PluginError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    check_meta(path, &std::fs::metadata(path).map_err(io)?)?;
    let file = open_nonblocking(path).map_err(io)?;
    // What was opened is what counts (the path may have been replaced since the check).
    let len = check_meta(path, &file.metadata().map_err(io)?)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_LIBRARY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 != len {
        return Err(invalid(
            path,
            format!(
                "changed while being read ({len} bytes at open, {} read); install plugins by writing aside and renaming",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

const ET_DYN: u16 = 3;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const SHT_NOBITS: u32 = 8;

/// The ELF `e_machine` of the machine this server was built for (`None`: not checked).
const HOST_MACHINE: Option<(u16, &str)> = if cfg!(target_arch = "x86_64") {
    Some((62, "x86_64"))
} else if cfg!(target_arch = "aarch64") {
    Some((183, "aarch64"))
} else if cfg!(target_arch = "riscv64") {
    Some((243, "riscv64"))
} else if cfg!(target_arch = "powerpc64") {
    Some((21, "powerpc64"))
} else if cfg!(target_arch = "s390x") {
    Some((22, "s390x"))
} else {
    None
};

fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "x86",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "s390",
        40 => "ARM",
        62 => "x86_64",
        183 => "aarch64",
        243 => "RISC-V",
        _ => "unknown",
    }
}

/// Little-endian field reads from a buffer whose length was checked by the caller.
struct Le<'a>(&'a [u8]);

impl Le<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(b)
    }
    fn u64(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }
}

/// Whether `offset..offset + size` lies within a file of `len` bytes.
fn within(offset: u64, size: u64, len: u64) -> bool {
    offset.checked_add(size).is_some_and(|end| end <= len)
}

fn table_end(offset: u64, count: u64, entry: usize) -> Option<u64> {
    count
        .checked_mul(entry as u64)
        .and_then(|n| n.checked_add(offset))
}

/// Checks that `bytes` (the content of `path`) are a complete 64-bit little-endian ELF shared
/// object for this machine: header fields, and every program header table entry, file-backed
/// segment, section header table entry and section within the file.
pub(crate) fn check_elf(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let len = bytes.len() as u64;
    let bad = |m: String| invalid(path, m);
    if bytes.len() < EHDR_SIZE {
        return Err(bad(format!(
            "is {len} bytes, too small for an ELF header ({EHDR_SIZE} bytes)"
        )));
    }
    if bytes[..4] != *b"\x7fELF" {
        return Err(bad(
            "is not an ELF shared library (the file does not start with the ELF magic \\x7fELF)"
                .into(),
        ));
    }
    if bytes[4] != 2 {
        return Err(bad(format!(
            "is not a 64-bit ELF file (EI_CLASS is {}, expected 2)",
            bytes[4]
        )));
    }
    if bytes[5] != 1 {
        return Err(bad(format!(
            "is not a little-endian ELF file (EI_DATA is {}, expected 1)",
            bytes[5]
        )));
    }
    if bytes[6] != 1 {
        return Err(bad(format!(
            "has ELF version {} (EI_VERSION), expected 1",
            bytes[6]
        )));
    }
    let h = Le(bytes);
    let e_type = h.u16(16);
    if e_type != ET_DYN {
        return Err(bad(format!(
            "is an ELF file of type {e_type}, not a shared library (ET_DYN, 3)"
        )));
    }
    let machine = h.u16(18);
    if let Some((ours, name)) = HOST_MACHINE {
        if machine != ours {
            return Err(bad(format!(
                "is built for machine {machine} ({}), this server runs on {name} ({ours})",
                machine_name(machine)
            )));
        }
    }
    let phoff = h.u64(32);
    let shoff = h.u64(40);
    let ehsize = h.u16(52);
    let phentsize = h.u16(54) as usize;
    let phnum = h.u16(56);
    let shentsize = h.u16(58) as usize;
    let mut shnum = u64::from(h.u16(60));
    if usize::from(ehsize) != EHDR_SIZE {
        return Err(bad(format!(
            "has an ELF header size of {ehsize}, expected {EHDR_SIZE}"
        )));
    }

    // Program headers: what the dynamic loader maps.
    if phnum == 0 || phnum == 0xffff {
        return Err(bad(format!(
            "has {phnum} program headers (a shared library has at least one, fewer than 65535)"
        )));
    }
    if phentsize != PHDR_SIZE {
        return Err(bad(format!(
            "has program header entries of {phentsize} bytes, expected {PHDR_SIZE}"
        )));
    }
    match table_end(phoff, phnum.into(), PHDR_SIZE) {
        Some(end) if end <= len => {}
        _ => {
            return Err(bad(format!(
                "is truncated or corrupt: the program header table ({phnum} entries at offset {phoff}) ends past the end of the file ({len} bytes)"
            )))
        }
    }
    let (mut loads, mut dynamic) = (0, false);
    for i in 0..phnum as usize {
        let at = phoff as usize + i * PHDR_SIZE;
        let p_type = h.u32(at);
        let p_offset = h.u64(at + 8);
        let p_filesz = h.u64(at + 32);
        let p_memsz = h.u64(at + 40);
        loads += usize::from(p_type == PT_LOAD);
        dynamic |= p_type == PT_DYNAMIC;
        if !within(p_offset, p_filesz, len) {
            return Err(bad(format!(
                "is truncated or corrupt: program header {i} (type {p_type:#x}) covers bytes {p_offset}..{} of a {len}-byte file",
                p_offset.saturating_add(p_filesz)
            )));
        }
        if p_type == PT_LOAD && p_filesz > p_memsz {
            return Err(bad(format!(
                "is corrupt: loadable segment {i} has {p_filesz} bytes in the file but {p_memsz} in memory"
            )));
        }
    }
    if loads == 0 {
        return Err(bad("has no loadable segment (PT_LOAD)".into()));
    }
    if !dynamic {
        return Err(bad("has no dynamic section (PT_DYNAMIC)".into()));
    }

    // Section headers: not used by the loader, but a truncated file loses them first (they sit at
    // the end), and a missing table is legal only when both the offset and the count are 0.
    if shoff == 0 && shnum == 0 {
        return Ok(());
    }
    if shentsize != SHDR_SIZE {
        return Err(bad(format!(
            "has section header entries of {shentsize} bytes, expected {SHDR_SIZE}"
        )));
    }
    if shnum == 0 {
        // More than 0xff00 sections: the count is in the first entry's `sh_size`.
        if !within(shoff, SHDR_SIZE as u64, len) {
            return Err(bad(format!(
                "is truncated or corrupt: the section header table at offset {shoff} is past the end of the file ({len} bytes)"
            )));
        }
        shnum = h.u64(shoff as usize + 32);
    }
    match table_end(shoff, shnum, SHDR_SIZE) {
        Some(end) if end <= len => {}
        _ => {
            return Err(bad(format!(
                "is truncated or corrupt: the section header table ({shnum} entries at offset {shoff}) ends past the end of the file ({len} bytes)"
            )))
        }
    }
    for i in 0..shnum as usize {
        let at = shoff as usize + i * SHDR_SIZE;
        let sh_type = h.u32(at + 4);
        let sh_offset = h.u64(at + 24);
        let sh_size = h.u64(at + 32);
        if sh_type != SHT_NOBITS && !within(sh_offset, sh_size, len) {
            return Err(bad(format!(
                "is truncated or corrupt: section {i} covers bytes {sh_offset}..{} of a {len}-byte file",
                sh_offset.saturating_add(sh_size)
            )));
        }
    }
    Ok(())
}
