//! Prints what bundled guests import, and what each imported instance holds:
//! `cargo run -p pvf-test-guests --example imports [NAME...]` (default: every built guest).
//!
//! A stand-in for `wasm-tools component wit`, with the wasmtime the host uses.

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Config, Engine};

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

fn main() -> wasmtime::Result<()> {
    let engine = Engine::new(&Config::new())?;
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = pvf_test_guests::available()
            .into_iter()
            .chain([pvf_test_guests::ADDER_SOCKET])
            .map(String::from)
            .collect();
    }
    for name in names {
        let path = pvf_test_guests::path(&name);
        let size = std::fs::metadata(&path)?.len();
        let component = Component::from_file(&engine, &path)?;
        println!("{name} ({size} bytes) imports:");
        for (import, item) in component.component_type().imports(&engine) {
            match &item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    let exports: Vec<String> = instance
                        .exports(&engine)
                        .map(|(export, item)| format!("{export} ({})", kind(&item.ty)))
                        .collect();
                    println!("  {import}: {}", exports.join(", "));
                }
                other => println!("  {import} ({})", kind(other)),
            }
        }
    }
    Ok(())
}
