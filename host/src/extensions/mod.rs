//! Host extensions: WIT interfaces implemented natively, which guests import next to WASI.
//!
//! An [`Extension`] is a WIT package of host interfaces plus its Rust implementation. The
//! embedder registers it on [`Config::extension`](crate::Config::extension) before the host
//! opens; the first-party [`crypto`] extension (`pvf:crypto@0.1.0`) is registered by default.
//!
//! ## The rules an extension keeps
//!
//! A verdict must be the same on every honest node, so an extension function is a *pure
//! function of its arguments*:
//!
//! - no clock, no randomness, no I/O, no state that outlives a call (nor any state at all);
//! - the same output for the same input on every machine (no floating point that depends on the
//!   CPU, no hash-map iteration order, no platform-dependent widths);
//! - it never panics on any input: malformed input is an ordinary answer (`false`, `none`, an
//!   empty list), decided by the function's own documented rules;
//! - its output is small, or bounded by its input with the price covering it: the arguments are
//!   read in place from the guest's memory (no copy), but the output is built in host memory
//!   and then written into the guest's.
//!
//! The API makes breaking these rules hard: a function body is a plain `fn` pointer (not a
//! closure, so it captures nothing) over byte slices, one of a closed set of shapes
//! ([`Body`]). It gets no store, no context and no handle to anything of the host.
//!
//! ## Price
//!
//! Every function has a deterministic [`Price`]: a base cost plus a cost per byte of its
//! arguments, charged from the guest's fuel *before* the body runs. A guest that cannot pay
//! runs out of fuel there, which is the ordinary deterministic `invalid`. Like every call into
//! the host, an extension call also costs [`HOST_CALL_FUEL`](crate::HOST_CALL_FUEL).
//!
//! ## Identity
//!
//! An extension declares an id (`namespace:package@version`, the WIT package it implements) and
//! a digest of everything about its behaviour that can change a verdict (its rules, the versions
//! of the code that implements them). Both, together with every function's name, shape and
//! price, go into the [execution-environment id](crate::ExecutionEnvironment): two nodes whose
//! ids are equal run the same extensions at the same prices.
//!
//! ## Writing one
//!
//! ```
//! use pvf_host::extensions::{Body, Extension, HostFunction, Price};
//!
//! /// `example:codec@0.1.0`: `interface hex { encode: func(data: list<u8>) -> list<u8>; }`.
//! struct HexCodec;
//!
//! fn encode(data: &[u8]) -> Vec<u8> {
//!     const DIGITS: &[u8; 16] = b"0123456789abcdef";
//!     data.iter()
//!         .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
//!         .collect()
//! }
//!
//! impl Extension for HexCodec {
//!     fn id(&self) -> &str {
//!         "example:codec@0.1.0"
//!     }
//!     fn digest(&self) -> [u8; 32] {
//!         *blake3::hash(b"example:codec@0.1.0 hex: lowercase, two digits a byte").as_bytes()
//!     }
//!     fn functions(&self) -> Vec<HostFunction> {
//!         vec![HostFunction::new(
//!             "example:codec/hex@0.1.0",
//!             "encode",
//!             Price::new(1_000, 4),
//!             Body::BytesToBytes(encode),
//!         )]
//!     }
//! }
//!
//! // An extension of your own runs in process (execution workers have only the first-party one).
//! let config = pvf_host::Config::new()
//!     .extension(HexCodec)
//!     .isolation(pvf_host::Isolation::InProcess);
//! # let _ = config;
//! ```

use std::fmt;
use std::sync::Arc;

pub mod crypto;
pub(crate) mod link;

/// A set of host interfaces implemented natively: see the [module docs](self) for the rules.
pub trait Extension: Send + Sync + 'static {
    /// The WIT package this extension implements, `namespace:package@version` (e.g.
    /// `pvf:crypto@0.1.0`). Every interface of [`Extension::functions`] must belong to it.
    fn id(&self) -> &str;

    /// A digest of everything about the extension's behaviour that can change a verdict: its
    /// rules (e.g. which signatures count as valid) and the versions of the code implementing
    /// them. Change it whenever a verdict could change. (Names, shapes and prices of the
    /// functions are hashed into the environment id anyway.)
    fn digest(&self) -> [u8; 32];

    /// The functions the extension provides.
    fn functions(&self) -> Vec<HostFunction>;
}

/// What an extension function costs the guest, in fuel: `base + per_byte × argument bytes`
/// (the bytes of every list argument, added up), charged before the function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Price {
    /// Fuel charged for every call.
    pub base: u64,
    /// Fuel charged for every byte of the arguments.
    pub per_byte: u64,
}

impl Price {
    /// A price of `base` fuel per call plus `per_byte` fuel per argument byte.
    pub const fn new(base: u64, per_byte: u64) -> Self {
        Self { base, per_byte }
    }

    /// The fuel a call with `bytes` argument bytes costs (saturating: a price that does not
    /// fit a `u64` cannot be paid).
    pub fn of(&self, bytes: usize) -> u64 {
        self.per_byte
            .saturating_mul(bytes as u64)
            .saturating_add(self.base)
    }
}

/// The body of an extension function: a plain function over byte slices, in one of these
/// shapes (the WIT signature each one implements is given; parameter names are free).
#[derive(Clone, Copy)]
pub enum Body {
    /// `func(a: list<u8>) -> list<u8>`
    BytesToBytes(fn(&[u8]) -> Vec<u8>),
    /// `func(a: list<u8>, b: list<u8>) -> list<u8>`
    Bytes2ToBytes(fn(&[u8], &[u8]) -> Vec<u8>),
    /// `func(a: list<u8>) -> bool`
    BytesToBool(fn(&[u8]) -> bool),
    /// `func(a: list<u8>, b: list<u8>) -> bool`
    Bytes2ToBool(fn(&[u8], &[u8]) -> bool),
    /// `func(a: list<u8>, b: list<u8>, c: list<u8>) -> bool`
    Bytes3ToBool(fn(&[u8], &[u8], &[u8]) -> bool),
    /// `func(a: list<u8>) -> option<list<u8>>`
    BytesToOptionBytes(fn(&[u8]) -> Option<Vec<u8>>),
    /// `func(a: list<u8>, b: list<u8>) -> option<list<u8>>`
    Bytes2ToOptionBytes(fn(&[u8], &[u8]) -> Option<Vec<u8>>),
    /// `func(a: list<u8>) -> u64`
    BytesToU64(fn(&[u8]) -> u64),
}

impl Body {
    /// The WIT signature this body implements, e.g. `func(list<u8>) -> bool`.
    pub fn signature(&self) -> &'static str {
        match self {
            Self::BytesToBytes(_) => "func(list<u8>) -> list<u8>",
            Self::Bytes2ToBytes(_) => "func(list<u8>, list<u8>) -> list<u8>",
            Self::BytesToBool(_) => "func(list<u8>) -> bool",
            Self::Bytes2ToBool(_) => "func(list<u8>, list<u8>) -> bool",
            Self::Bytes3ToBool(_) => "func(list<u8>, list<u8>, list<u8>) -> bool",
            Self::BytesToOptionBytes(_) => "func(list<u8>) -> option<list<u8>>",
            Self::Bytes2ToOptionBytes(_) => "func(list<u8>, list<u8>) -> option<list<u8>>",
            Self::BytesToU64(_) => "func(list<u8>) -> u64",
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signature())
    }
}

/// One function of an extension: where guests import it from, its price and its body.
#[derive(Debug, Clone)]
pub struct HostFunction {
    interface: String,
    name: String,
    price: Price,
    body: Body,
}

impl HostFunction {
    /// The function `name` of the interface `interface` (`namespace:package/interface@version`,
    /// e.g. `pvf:crypto/hashing@0.1.0`), costing `price`, implemented by `body`.
    pub fn new(
        interface: impl Into<String>,
        name: impl Into<String>,
        price: Price,
        body: Body,
    ) -> Self {
        Self {
            interface: interface.into(),
            name: name.into(),
            price,
            body,
        }
    }

    /// The interface guests import the function from.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The function's name in its interface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What a call costs.
    pub fn price(&self) -> Price {
        self.price
    }

    /// The implementation.
    pub fn body(&self) -> Body {
        self.body
    }
}

/// An extension registration that the host refuses (at [`ValidationHost::new`]).
///
/// [`ValidationHost::new`]: crate::ValidationHost::new
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// The id is not `namespace:package@version`.
    #[error("extension id {0:?} is not namespace:package@version")]
    BadId(String),
    /// A function's interface is not `namespace:package/interface@version` of its extension's
    /// package (an extension may not provide WASI, `pvf:validation` or another's interfaces).
    #[error("extension {extension}: interface {interface:?} is not an interface of its package")]
    ForeignInterface {
        /// The extension's id.
        extension: String,
        /// The interface it tried to provide.
        interface: String,
    },
    /// A function name is empty or not a WIT identifier, or appears twice in one interface.
    #[error("extension {extension}: bad or duplicate function name {name:?} in {interface}")]
    BadFunction {
        /// The extension's id.
        extension: String,
        /// The interface.
        interface: String,
        /// The function name.
        name: String,
    },
}

/// The extensions registered on a [`Config`](crate::Config), in registration order.
///
/// Two sets are equal when they hold the same ids with the same digests and functions (names,
/// shapes, prices) in the same order.
#[derive(Clone, Default)]
pub struct ExtensionSet {
    extensions: Vec<Arc<dyn Extension>>,
}

impl ExtensionSet {
    /// A set with no extension (WASI only).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds `extension`; it replaces an extension with the same id.
    pub fn add(&mut self, extension: Arc<dyn Extension>) {
        self.extensions.retain(|e| e.id() != extension.id());
        self.extensions.push(extension);
    }

    /// Removes the extension with id `id`, if it is registered.
    pub fn remove(&mut self, id: &str) {
        self.extensions.retain(|e| e.id() != id);
    }

    /// Whether an extension with id `id` is registered.
    pub fn contains(&self, id: &str) -> bool {
        self.extensions.iter().any(|e| e.id() == id)
    }

    /// The registered extensions' ids, in registration order.
    pub fn ids(&self) -> Vec<String> {
        self.extensions.iter().map(|e| e.id().to_string()).collect()
    }

    /// The registered extensions.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Extension>> {
        self.extensions.iter()
    }

    /// Whether no extension is registered.
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
    }

    /// Checks every registration: ids, interfaces and names (see [`ExtensionError`]).
    pub fn check(&self) -> Result<(), ExtensionError> {
        for extension in &self.extensions {
            let id = extension.id();
            let (package, version) =
                split_id(id).ok_or_else(|| ExtensionError::BadId(id.into()))?;
            let mut names = Vec::new();
            for function in extension.functions() {
                let interface = function.interface();
                let own = interface
                    .strip_prefix(package)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .and_then(|rest| rest.strip_suffix(version))
                    .and_then(|name| name.strip_suffix('@'))
                    .is_some_and(is_wit_identifier);
                if !own {
                    return Err(ExtensionError::ForeignInterface {
                        extension: id.into(),
                        interface: interface.into(),
                    });
                }
                let key = (interface.to_string(), function.name().to_string());
                if !is_wit_identifier(function.name()) || names.contains(&key) {
                    return Err(ExtensionError::BadFunction {
                        extension: id.into(),
                        interface: interface.into(),
                        name: function.name().into(),
                    });
                }
                names.push(key);
            }
        }
        Ok(())
    }

    /// What identifies the set for the environment id: per extension, its id, its digest and a
    /// digest of its functions' interfaces, names, shapes and prices.
    pub fn identity(&self) -> Vec<(String, [u8; 32])> {
        self.extensions
            .iter()
            .map(|e| {
                let mut hasher = blake3::Hasher::new();
                hasher.update(b"pvf-host extension identity v1\0");
                hasher.update(e.id().as_bytes());
                hasher.update(b"\0");
                hasher.update(&e.digest());
                for f in e.functions() {
                    for part in [f.interface(), f.name(), f.body().signature()] {
                        hasher.update(part.as_bytes());
                        hasher.update(b"\0");
                    }
                    hasher.update(&f.price().base.to_le_bytes());
                    hasher.update(&f.price().per_byte.to_le_bytes());
                }
                (e.id().to_string(), *hasher.finalize().as_bytes())
            })
            .collect()
    }
}

impl fmt::Debug for ExtensionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl PartialEq for ExtensionSet {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for ExtensionSet {}

/// `namespace:package@version` split into (`namespace:package`, `version`).
fn split_id(id: &str) -> Option<(&str, &str)> {
    let (package, version) = id.split_once('@')?;
    let (namespace, name) = package.split_once(':')?;
    let ok = is_wit_identifier(namespace)
        && is_wit_identifier(name)
        && !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    ok.then_some((package, version))
}

/// A WIT identifier in lowercase kebab case: words of lowercase letters and digits joined by
/// `-`, the first word starting with a letter (`blake2b-256` is one, `2x` and `a--b` are not).
fn is_wit_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.split('-').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Test {
        id: &'static str,
        digest: [u8; 32],
        functions: Vec<HostFunction>,
    }

    impl Extension for Test {
        fn id(&self) -> &str {
            self.id
        }
        fn digest(&self) -> [u8; 32] {
            self.digest
        }
        fn functions(&self) -> Vec<HostFunction> {
            self.functions.clone()
        }
    }

    fn identity(data: &[u8]) -> Vec<u8> {
        data.to_vec()
    }

    fn set(id: &'static str, functions: Vec<HostFunction>) -> ExtensionSet {
        let mut set = ExtensionSet::empty();
        set.add(Arc::new(Test {
            id,
            digest: [7; 32],
            functions,
        }));
        set
    }

    fn function(interface: &str, name: &str, price: Price) -> HostFunction {
        HostFunction::new(interface, name, price, Body::BytesToBytes(identity))
    }

    #[test]
    fn well_formed_registrations_pass_the_check() {
        let s = set(
            "acme:codec@1.2.0",
            vec![
                function("acme:codec/hex@1.2.0", "encode", Price::new(1, 1)),
                function("acme:codec/hex@1.2.0", "decode-all", Price::new(1, 1)),
                function("acme:codec/hex@1.2.0", "sha2-256", Price::new(1, 1)),
                function("acme:codec/base-64@1.2.0", "encode", Price::new(1, 1)),
            ],
        );
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn an_extension_cannot_provide_wasi_or_another_package() {
        for interface in [
            "wasi:random/random@0.2.6",
            "pvf:validation/validate@0.1.0",
            "acme:codec/hex@1.3.0",
            "acme:codec/hex",
            "acme:codecs/hex@1.2.0",
            "acme:codec/Hex@1.2.0",
        ] {
            let s = set(
                "acme:codec@1.2.0",
                vec![function(interface, "encode", Price::new(0, 0))],
            );
            assert!(
                matches!(s.check(), Err(ExtensionError::ForeignInterface { .. })),
                "{interface}: {:?}",
                s.check()
            );
        }
    }

    #[test]
    fn bad_ids_and_names_are_refused() {
        for id in [
            "acme",
            "acme:codec",
            "Acme:codec@1",
            "acme:@1",
            "acme:codec@",
        ] {
            assert_eq!(
                set(id, vec![]).check(),
                Err(ExtensionError::BadId(id.into()))
            );
        }
        for name in ["", "Encode", "en code", "-x", "2x", "a--b", "a-"] {
            let s = set(
                "acme:codec@1.2.0",
                vec![function("acme:codec/hex@1.2.0", name, Price::new(0, 0))],
            );
            assert!(matches!(s.check(), Err(ExtensionError::BadFunction { .. })));
        }
        let twice = set(
            "acme:codec@1.2.0",
            vec![
                function("acme:codec/hex@1.2.0", "encode", Price::new(0, 0)),
                function("acme:codec/hex@1.2.0", "encode", Price::new(0, 0)),
            ],
        );
        assert!(matches!(
            twice.check(),
            Err(ExtensionError::BadFunction { .. })
        ));
    }

    #[test]
    fn the_identity_changes_with_prices_names_and_digests_only() {
        let a = set(
            "acme:codec@1.2.0",
            vec![function("acme:codec/hex@1.2.0", "encode", Price::new(1, 2))],
        );
        let same = set(
            "acme:codec@1.2.0",
            vec![function("acme:codec/hex@1.2.0", "encode", Price::new(1, 2))],
        );
        let repriced = set(
            "acme:codec@1.2.0",
            vec![function("acme:codec/hex@1.2.0", "encode", Price::new(1, 3))],
        );
        let renamed = set(
            "acme:codec@1.2.0",
            vec![function(
                "acme:codec/hex@1.2.0",
                "encode2",
                Price::new(1, 2),
            )],
        );
        let mut redigested = ExtensionSet::empty();
        redigested.add(Arc::new(Test {
            id: "acme:codec@1.2.0",
            digest: [8; 32],
            functions: vec![function("acme:codec/hex@1.2.0", "encode", Price::new(1, 2))],
        }));
        assert_eq!(a, same);
        assert_ne!(a, redigested, "a new digest is a new identity");
        assert_ne!(a, repriced);
        assert_ne!(a, renamed);
        assert_ne!(a, ExtensionSet::empty());
    }

    #[test]
    fn adding_an_id_again_replaces_it() {
        let mut s = set("acme:codec@1.2.0", vec![]);
        s.add(Arc::new(Test {
            id: "acme:codec@1.2.0",
            digest: [7; 32],
            functions: vec![function("acme:codec/hex@1.2.0", "x", Price::new(0, 0))],
        }));
        assert_eq!(s.ids(), ["acme:codec@1.2.0"]);
        assert_eq!(s.iter().next().unwrap().functions().len(), 1);
        s.remove("acme:codec@1.2.0");
        assert!(s.is_empty());
    }

    #[test]
    fn prices_saturate() {
        assert_eq!(Price::new(10, 3).of(5), 25);
        assert_eq!(Price::new(u64::MAX, 1).of(1), u64::MAX);
        assert_eq!(Price::new(1, u64::MAX).of(2), u64::MAX);
    }
}
