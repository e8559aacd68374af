//! Integration tests of the validation host: real guests from `guest-components/`, the real store
//! on a temporary directory, and the real `pvf` binary. One binary, a module per topic.

mod bad_conditions;
mod cache_cli;
mod cli;
mod common;
mod confine;
mod execution_workers;
mod extensions;
mod fault_injection;
mod hostile;
mod limits;
mod load;
mod memory_cache;
mod processes;
mod pruning;
mod sandbox;
mod serve;
mod service;
mod store_faults;
mod verdicts;
mod workers;
