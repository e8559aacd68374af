//! The environment fingerprint: everything that can make an artifact unusable here.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use std::os::unix::fs::FileExt;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use wasmtime::Engine;

use crate::config::Config;

/// A blake3 hash over everything that can make a compiled artifact unusable on this node:
/// wasmtime's compatibility hash (its version, target, ISA flags, tunables and features), this
/// crate's version, the identity of the running executable (its GNU build-id, a hash of its
/// contents that the linker computed; or, for an executable without one, its bytes), the CPU
/// features detected at runtime and the kernel release.
///
/// Artifacts are stored in one directory per fingerprint, so an artifact compiled by another
/// build, on another CPU or under another kernel is never even looked at.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvFingerprint([u8; 32]);

impl EnvFingerprint {
    /// The fingerprint of this process running `engine`.
    ///
    /// Reads the running executable (`/proc/self/exe`, or where `std::env::current_exe` points)
    /// through ambient authority: this is, with opening the store's directory, the only file
    /// access outside a [`cap_std::fs::Dir`] handed in by the caller. Only the ELF headers and
    /// note segments are read (a few KiB) when the executable carries a GNU build-id note;
    /// without one, the whole file is read and hashed.
    pub fn current(engine: &Engine, config: &Config) -> std::io::Result<Self> {
        let identity = executable_identity()?;
        // The engine settings that are not runtime limits: wasmtime's compatibility hash covers
        // the compilation settings; the stack limit is added here.
        let engine_settings = format!("max_wasm_stack={}", config.max_wasm_stack_bytes);
        Ok(Self::from_parts(
            engine,
            &identity,
            &format!("{} {engine_settings}", cpu_features()),
            &kernel_release(),
        ))
    }

    /// The fingerprint of explicit inputs (what [`EnvFingerprint::current`] gathers).
    /// `exe_identity` stands for the executable: [`EnvFingerprint::current`] passes
    /// `gnu-build-id:` followed by the build-id's bytes, or the executable's bytes.
    pub fn from_parts(
        engine: &Engine,
        exe_identity: &[u8],
        cpu_features: &str,
        kernel: &str,
    ) -> Self {
        let mut h = blake3::Hasher::new_derive_key("pvf-host environment fingerprint v1");
        let mut adapter = Blake3Hasher(&mut h);
        engine.precompile_compatibility_hash().hash(&mut adapter);
        for part in [
            env!("CARGO_PKG_VERSION").as_bytes(),
            blake3::hash(exe_identity).as_bytes(),
            cpu_features.as_bytes(),
            kernel.as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Self(*h.finalize().as_bytes())
    }

    /// The 32 bytes of the fingerprint.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The fingerprint in lowercase hex: the name of its directory in the store.
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
}

impl fmt::Display for EnvFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EnvFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvFingerprint({})", self.to_hex())
    }
}

impl FromStr for EnvFingerprint {
    type Err = String;

    /// Parses 64 hex digits (a fingerprint directory's name), for tools that act on a store
    /// directory named by another program. Artifacts are only safe to load under the
    /// fingerprint of the environment that compiled them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s)
            .map(Self)
            .ok_or_else(|| format!("not an environment fingerprint (64 hex digits): {s:?}"))
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_string(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// blake3 of `engine`'s `precompile_compatibility_hash`: equal for two engines exactly when
/// artifacts of one load in the other (the preparation worker's handshake compares them).
pub(crate) fn engine_digest(engine: &Engine) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("pvf-host engine compatibility v1");
    engine
        .precompile_compatibility_hash()
        .hash(&mut Blake3Hasher(&mut h));
    *h.finalize().as_bytes()
}

/// The 32 bytes written as `s` in 64 hex digits (either case); `None` for anything else.
pub(crate) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Feeds `std::hash::Hash` output into blake3 (wasmtime exposes its compatibility hash that way).
struct Blake3Hasher<'a>(&'a mut blake3::Hasher);

impl Hasher for Blake3Hasher<'_> {
    fn finish(&self) -> u64 {
        unreachable!("only used as a sink")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The CPU features detected at runtime, as a stable list of names.
fn cpu_features() -> String {
    let mut out = String::from(std::env::consts::ARCH);
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) { out.push(' '); out.push_str($f); }
            )*};
        }
        detect!(
            "sse2",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "lzcnt",
            "avx512f",
            "avx512vl",
            "avx512dq",
            "avx512bw",
            "avx512vbmi",
            "avx512bitalg",
            "avx512vpopcntdq",
            "cmpxchg16b"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) { out.push(' '); out.push_str($f); }
            )*};
        }
        detect!("neon", "lse", "fp16", "bti", "pauth", "crc", "aes", "sha2");
    }
    out
}

/// The kernel release (`uname -r`).
fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// What stands for the running executable in the fingerprint: `gnu-build-id:` and the bytes of
/// its GNU build-id note, or, when it has none (or is not an ELF file this parser understands),
/// its whole contents.
fn executable_identity() -> std::io::Result<Vec<u8>> {
    // The running image itself (no race with a rebuild that replaces the file at its path);
    // where there is no procfs, the path std finds.
    let file = match cap_std::fs::File::open_ambient("/proc/self/exe", ambient_authority()) {
        Ok(file) => file.into_std(),
        Err(_) => {
            let exe = std::env::current_exe()?;
            let (Some(parent), Some(name)) = (exe.parent(), exe.file_name()) else {
                return Err(std::io::Error::other(format!(
                    "cannot locate the running executable ({})",
                    exe.display()
                )));
            };
            Dir::open_ambient_dir(parent, ambient_authority())?
                .open(name)?
                .into_std()
        }
    };
    let mut read_at = |offset: u64, buf: &mut [u8]| file.read_exact_at(buf, offset);
    let found = gnu_build_id(&mut read_at);
    if let Err(ElfError::Malformed(why)) = &found {
        tracing::debug!(why, "cannot read the executable's ELF headers");
    }
    match found {
        Ok(Some(id)) => Ok([&b"gnu-build-id:"[..], &id].concat()),
        Err(ElfError::Io(e)) => Err(e),
        Ok(None) | Err(ElfError::Malformed(_)) => {
            tracing::debug!("the executable has no GNU build-id note: hashing all of it");
            let len = file.metadata()?.len();
            let mut bytes = Vec::new();
            bytes
                .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
                .map_err(|_| {
                    std::io::Error::other("cannot allocate a buffer for the executable")
                })?;
            std::io::Read::read_to_end(&mut &file, &mut bytes)?;
            Ok(bytes)
        }
    }
}

/// Why [`gnu_build_id`] found no answer.
#[derive(Debug)]
pub(crate) enum ElfError {
    /// Reading failed (other than by reaching the end of the file).
    Io(std::io::Error),
    /// Not an ELF file, or one whose headers or notes do not hold together (truncated, out of
    /// bounds, absurd sizes).
    Malformed(&'static str),
}

/// The most program headers read (real executables have about a dozen).
const MAX_PROGRAM_HEADERS: usize = 1024;
/// The largest program header entry accepted (they are 56 bytes in ELF64, 32 in ELF32).
const MAX_PROGRAM_HEADER_SIZE: usize = 256;
/// The largest note segment read (a build-id note is 36 bytes).
const MAX_NOTE_SEGMENT: u64 = 64 * 1024;
/// The largest build-id accepted (SHA-1 ids are 20 bytes, UUIDs 16, xxhash 8).
const MAX_BUILD_ID: usize = 64;
/// `PT_NOTE`.
const PT_NOTE: u32 = 4;
/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;

/// The GNU build-id of an ELF image (32- or 64-bit, either byte order): the descriptor of the
/// `NT_GNU_BUILD_ID` note owned by `GNU` in a `PT_NOTE` segment. Reads only the ELF header, the
/// program header table and the note segments, through `read_at(offset, buffer)`, which must
/// fill `buffer` from `offset` (an `UnexpectedEof` error means the image ends before). Every
/// size and offset is checked: bad input is an error, never a panic or a large allocation.
/// `Ok(None)`: a well-formed image without a build-id.
pub(crate) fn gnu_build_id(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<Option<Vec<u8>>, ElfError> {
    let mut read = |offset: u64, len: usize| -> Result<Vec<u8>, ElfError> {
        let mut buf = vec![0u8; len];
        match read_at(offset, &mut buf) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ElfError::Malformed("truncated"))
            }
            Err(e) => Err(ElfError::Io(e)),
        }
    };
    let ident = read(0, 16)?;
    if ident[..4] != *b"\x7fELF" {
        return Err(ElfError::Malformed("not an ELF file"));
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(ElfError::Malformed("unknown ELF class")),
    };
    let e = match ident[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        _ => return Err(ElfError::Malformed("unknown ELF byte order")),
    };
    let header = read(0, if wide { 64 } else { 52 })?;
    let (phoff, phentsize, phnum) = if wide {
        (
            e.u64(&header, 32)?,
            e.u16(&header, 54)?,
            e.u16(&header, 56)?,
        )
    } else {
        (
            u64::from(e.u32(&header, 28)?),
            e.u16(&header, 42)?,
            e.u16(&header, 44)?,
        )
    };
    let (phentsize, phnum) = (usize::from(phentsize), usize::from(phnum));
    if phnum == 0xffff {
        // PN_XNUM: the count lives in a section header; executables do not need that many.
        return Err(ElfError::Malformed("too many program headers"));
    }
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::Malformed("too many program headers"));
    }
    if phentsize < if wide { 56 } else { 32 } || phentsize > MAX_PROGRAM_HEADER_SIZE {
        return Err(ElfError::Malformed("program header size out of range"));
    }
    let table = read(phoff, phentsize * phnum)?;
    for ph in table.chunks_exact(phentsize) {
        if e.u32(ph, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size, align) = if wide {
            (e.u64(ph, 8)?, e.u64(ph, 32)?, e.u64(ph, 48)?)
        } else {
            (
                u64::from(e.u32(ph, 4)?),
                u64::from(e.u32(ph, 16)?),
                u64::from(e.u32(ph, 28)?),
            )
        };
        if size > MAX_NOTE_SEGMENT {
            return Err(ElfError::Malformed("note segment too large"));
        }
        // Notes are 4-byte aligned, or 8-byte aligned in segments that say so (binutils' rule).
        let align = if align == 8 { 8 } else { 4 };
        let notes = read(offset, size as usize)?;
        if let Some(id) = find_build_id(&notes, e, align)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The build-id note among the notes of one segment.
fn find_build_id(notes: &[u8], e: Endian, align: usize) -> Result<Option<Vec<u8>>, ElfError> {
    let bad = ElfError::Malformed;
    let padded = |n: usize| n.checked_next_multiple_of(align).ok_or(bad("note size"));
    let mut pos = 0usize;
    while notes.len().saturating_sub(pos) >= 12 {
        let namesz = e.u32(notes, pos)? as usize;
        let descsz = e.u32(notes, pos + 4)? as usize;
        let kind = e.u32(notes, pos + 8)?;
        let name_at = pos + 12;
        // The descriptor and the next note start at the next aligned offset (notes themselves
        // start aligned, at 0 and at each `next`).
        let desc_at = padded(name_at.checked_add(namesz).ok_or(bad("note size"))?)?;
        let next = padded(desc_at.checked_add(descsz).ok_or(bad("note size"))?)?;
        let name = notes
            .get(name_at..name_at.checked_add(namesz).ok_or(bad("note size"))?)
            .ok_or(bad("note name out of bounds"))?;
        let desc = notes
            .get(desc_at..desc_at.checked_add(descsz).ok_or(bad("note size"))?)
            .ok_or(bad("note descriptor out of bounds"))?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            if desc.is_empty() || desc.len() > MAX_BUILD_ID {
                return Err(bad("build-id of an odd size"));
            }
            return Ok(Some(desc.to_vec()));
        }
        pos = next;
    }
    Ok(None)
}

/// The byte order of an ELF file.
#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn bytes<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ElfError> {
        at.checked_add(N)
            .and_then(|end| bytes.get(at..end))
            .and_then(|b| b.try_into().ok())
            .ok_or(ElfError::Malformed("field out of bounds"))
    }
    fn u16(self, bytes: &[u8], at: usize) -> Result<u16, ElfError> {
        let b = Self::bytes(bytes, at)?;
        Ok(match self {
            Self::Little => u16::from_le_bytes(b),
            Self::Big => u16::from_be_bytes(b),
        })
    }
    fn u32(self, bytes: &[u8], at: usize) -> Result<u32, ElfError> {
        let b = Self::bytes(bytes, at)?;
        Ok(match self {
            Self::Little => u32::from_le_bytes(b),
            Self::Big => u32::from_be_bytes(b),
        })
    }
    fn u64(self, bytes: &[u8], at: usize) -> Result<u64, ElfError> {
        let b = Self::bytes(bytes, at)?;
        Ok(match self {
            Self::Little => u64::from_le_bytes(b),
            Self::Big => u64::from_be_bytes(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{ElfError, EnvFingerprint, gnu_build_id};
    use std::io::{Error, ErrorKind};

    /// `read_at` over bytes in memory: `UnexpectedEof` past their end, like a file.
    fn reader(bytes: &[u8]) -> impl FnMut(u64, &mut [u8]) -> std::io::Result<()> + '_ {
        move |offset, buf| {
            let eof = || Error::from(ErrorKind::UnexpectedEof);
            let start = usize::try_from(offset).map_err(|_| eof())?;
            let end = start.checked_add(buf.len()).ok_or_else(eof)?;
            buf.copy_from_slice(bytes.get(start..end).ok_or_else(eof)?);
            Ok(())
        }
    }

    fn parse(bytes: &[u8]) -> Result<Option<Vec<u8>>, ElfError> {
        gnu_build_id(&mut reader(bytes))
    }

    /// The first `len` bytes of the running test executable.
    fn own_executable(len: usize) -> Vec<u8> {
        let mut bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        bytes.truncate(len);
        bytes
    }

    /// The build-id a plain search of `bytes` finds: a little-endian note header with a 4-byte
    /// name, type 3 and the name `GNU\0`, then the descriptor.
    fn search(bytes: &[u8]) -> Option<Vec<u8>> {
        (0..bytes.len().saturating_sub(16)).find_map(|i| {
            let h = &bytes[i..i + 16];
            let descsz = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
            (h[0..4] == [4, 0, 0, 0]
                && h[8..16] == *b"\x03\0\0\0GNU\0"
                && (1..=64).contains(&descsz))
            .then(|| bytes.get(i + 16..i + 16 + descsz).map(<[u8]>::to_vec))
            .flatten()
        })
    }

    #[test]
    fn reads_the_build_id_of_the_running_executable() {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let mut read_at =
            |offset, buf: &mut [u8]| std::os::unix::fs::FileExt::read_exact_at(&file, buf, offset);
        let id = gnu_build_id(&mut read_at).expect("an ELF executable");
        // The same answer as a plain search of the file's start, where linkers put the note.
        assert_eq!(id, search(&own_executable(1 << 20)));
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert!(
                id.is_some(),
                "this build links with a build-id (see BENCHMARKS.md)"
            );
        }
    }

    #[test]
    fn truncated_and_garbled_images_are_errors_not_panics() {
        let image = own_executable(1 << 16);
        let full = parse(&image).expect("the start of the executable holds the headers and note");
        // Every truncation: an error until the note is complete, then the full answer.
        let mut complete = false;
        for len in 0..=image.len().min(8192) {
            match parse(&image[..len]) {
                Ok(id) => {
                    assert_eq!(id, full, "truncated to {len} bytes");
                    complete = true;
                }
                Err(ElfError::Malformed(_)) => {
                    assert!(!complete, "an error after success at {len} bytes")
                }
                Err(ElfError::Io(e)) => panic!("{len}: {e}"),
            }
        }
        // Garbage: seeded bit flips in the headers, and noise.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut garbled = image[..4096.min(image.len())].to_vec();
            for _ in 0..=next() % 4 {
                let at = (next() % garbled.len() as u64) as usize;
                garbled[at] ^= 1 << (next() % 8);
            }
            let _ = parse(&garbled);
        }
        for len in [0, 3, 16, 52, 64, 1000] {
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(parse(&noise).is_err());
            let mut elfish = noise.clone();
            if len >= 16 {
                elfish[..6].copy_from_slice(b"\x7fELF\x02\x01");
                let _ = parse(&elfish);
            }
        }
    }

    /// A minimal ELF image: header, one `PT_NOTE` program header, then the notes.
    fn image(wide: bool, big: bool, align: u64, notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        // `v` as `width` bytes in the image's byte order.
        let num = |v: u64, width: usize| -> Vec<u8> {
            let bytes = v.to_le_bytes()[..width].to_vec();
            if big {
                bytes.into_iter().rev().collect()
            } else {
                bytes
            }
        };
        let (u16b, u32b, u64b) = (
            |v: u16| num(u64::from(v), 2),
            |v: u32| num(u64::from(v), 4),
            |v: u64| num(v, 8),
        );
        let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(align as usize), 0);
        let mut body = Vec::new();
        for (name, kind, desc) in notes {
            body.extend(u32b(name.len() as u32));
            body.extend(u32b(desc.len() as u32));
            body.extend(u32b(*kind));
            body.extend(*name);
            pad(&mut body);
            body.extend(*desc);
            pad(&mut body);
        }
        let (ehsize, phsize) = if wide { (64, 56) } else { (52, 32) };
        let offset = (ehsize + phsize) as u64;
        let mut out = vec![
            0x7f,
            b'E',
            b'L',
            b'F',
            if wide { 2 } else { 1 },
            if big { 2 } else { 1 },
        ];
        out.resize(16, 0);
        let mut header = out.clone();
        header.resize(ehsize, 0);
        let put = |h: &mut Vec<u8>, at: usize, bytes: Vec<u8>| {
            h[at..at + bytes.len()].copy_from_slice(&bytes)
        };
        let mut ph = vec![0u8; phsize];
        put(&mut ph, 0, u32b(4));
        if wide {
            put(&mut header, 32, u64b(ehsize as u64));
            put(&mut header, 54, u16b(phsize as u16));
            put(&mut header, 56, u16b(1));
            put(&mut ph, 8, u64b(offset));
            put(&mut ph, 32, u64b(body.len() as u64));
            put(&mut ph, 48, u64b(align));
        } else {
            put(&mut header, 28, u32b(ehsize as u32));
            put(&mut header, 42, u16b(phsize as u16));
            put(&mut header, 44, u16b(1));
            put(&mut ph, 4, u32b(offset as u32));
            put(&mut ph, 16, u32b(body.len() as u32));
            put(&mut ph, 28, u32b(align as u32));
        }
        out = header;
        out.extend(ph);
        out.extend(body);
        out
    }

    #[test]
    fn finds_the_build_id_in_every_layout() {
        let id: &[u8] = &[0xab; 20];
        let abi: (&[u8], u32, &[u8]) = (
            b"GNU\0",
            1,
            &[0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
        );
        for wide in [false, true] {
            for big in [false, true] {
                for align in [4, 8] {
                    let with = image(
                        wide,
                        big,
                        align,
                        &[abi, (b"Go\0", 3, b"other"), (b"GNU\0", 3, id)],
                    );
                    assert_eq!(
                        parse(&with).unwrap().as_deref(),
                        Some(id),
                        "{wide} {big} {align}"
                    );
                    let without = image(wide, big, align, &[abi]);
                    assert_eq!(parse(&without).unwrap(), None, "{wide} {big} {align}");
                    // A note whose sizes point past the segment.
                    let huge = image(wide, big, align, &[(b"GNU\0", 3, id)]);
                    let mut bad = huge.clone();
                    let at = if wide { 64 + 56 } else { 52 + 32 };
                    bad[at..at + 4].copy_from_slice(&[0xff; 4]);
                    assert!(matches!(parse(&bad), Err(ElfError::Malformed(_))));
                    bad[at..at + 4].copy_from_slice(&[0; 4]);
                    bad[at + 4..at + 8].copy_from_slice(&[0xff; 4]);
                    assert!(matches!(parse(&bad), Err(ElfError::Malformed(_))));
                }
            }
        }
    }

    #[test]
    fn the_identity_is_in_the_fingerprint() {
        let engine = wasmtime::Engine::default();
        let fp = |id: &[u8]| EnvFingerprint::from_parts(&engine, id, "cpu", "kernel");
        assert_eq!(fp(b"gnu-build-id:\x01"), fp(b"gnu-build-id:\x01"));
        assert_ne!(fp(b"gnu-build-id:\x01"), fp(b"gnu-build-id:\x02"));
    }
}
