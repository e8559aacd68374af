//! Checks that a component's `validate-block` export has exactly the contract's signature.
//!
//! The generated bindings only type-check exports when a component is instantiated; a component
//! with the right export names but another signature would then fail at every execution. This
//! check runs at preparation, so such code is rejected once, deterministically, before anything is
//! stored.

use wasmtime::component::Component;
use wasmtime::component::types::{ComponentItem, Type};

/// The exported interface instance.
pub(crate) const INTERFACE: &str = "pvf:validation/validate@0.1.0";
/// The exported function.
const FUNCTION: &str = "validate-block";

const PARAMS: &str = "record{parent-head: list<u8>, block-data: list<u8>, relay-parent-number: u32, \
     relay-parent-storage-root: list<u8>}";
const RESULT: &str = "result<record{head-data: list<u8>, new-validation-code: option<list<u8>>, \
     upward-messages: list<list<u8>>, horizontal-messages: list<record{recipient: u32, data: list<u8>}>, \
     processed-downward-messages: u32, hrmp-watermark: u32}, string>";

/// Checks `component` exports `validate-block` of [`INTERFACE`] with the contract's signature.
pub(crate) fn check_exports(component: &Component) -> Result<(), String> {
    let (_, interface) = component
        .get_export(None, INTERFACE)
        .ok_or_else(|| format!("no export {INTERFACE}"))?;
    let (item, _) = component
        .get_export(Some(&interface), FUNCTION)
        .ok_or_else(|| format!("{INTERFACE} has no function {FUNCTION}"))?;
    let ComponentItem::ComponentFunc(func) = item else {
        return Err(format!("{INTERFACE}/{FUNCTION} is not a function"));
    };
    if func.async_() {
        return Err(format!("{FUNCTION} is async"));
    }
    let params: Vec<String> = func.params().map(|(_, ty)| render(&ty)).collect();
    let results: Vec<String> = func.results().map(|ty| render(&ty)).collect();
    if params != [PARAMS] || results != [RESULT] {
        return Err(format!(
            "{FUNCTION} has signature func({}) -> ({}), expected func({PARAMS}) -> {RESULT}",
            params.join(", "),
            results.join(", ")
        ));
    }
    Ok(())
}

/// A WIT-like rendering of `ty` (records with their field names), for comparison and messages.
fn render(ty: &Type) -> String {
    let simple = match ty {
        Type::Bool => "bool",
        Type::S8 => "s8",
        Type::U8 => "u8",
        Type::S16 => "s16",
        Type::U16 => "u16",
        Type::S32 => "s32",
        Type::U32 => "u32",
        Type::S64 => "s64",
        Type::U64 => "u64",
        Type::Float32 => "f32",
        Type::Float64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::List(l) => return format!("list<{}>", render(&l.ty())),
        Type::Option(o) => return format!("option<{}>", render(&o.ty())),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or_else(|| "_".to_string(), |t| render(&t));
            return format!("result<{}, {}>", side(r.ok()), side(r.err()));
        }
        Type::Record(r) => {
            let fields: Vec<String> = r
                .fields()
                .map(|f| format!("{}: {}", f.name, render(&f.ty)))
                .collect();
            return format!("record{{{}}}", fields.join(", "));
        }
        Type::Tuple(t) => {
            let types: Vec<String> = t.types().map(|t| render(&t)).collect();
            return format!("tuple<{}>", types.join(", "));
        }
        Type::Map(_) => "map<..>",
        Type::Variant(_) => "variant{..}",
        Type::Enum(_) => "enum{..}",
        Type::Flags(_) => "flags{..}",
        Type::Own(_) => "own<..>",
        Type::Borrow(_) => "borrow<..>",
        Type::Future(_) => "future<..>",
        Type::Stream(_) => "stream<..>",
        Type::ErrorContext => "error-context",
        Type::FixedLengthList(_) => "list<.., N>",
    };
    simple.to_string()
}
