//! Guest `sandbox-escape`: tries files, sockets, DNS, environment, arguments and working directory, and reports each outcome; exercises the sandbox.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use std::fmt::Display;
use std::io;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

struct Pvf;
export!(Pvf);

/// Appends `<probe>=ok:<detail>` or `<probe>=err:<io::ErrorKind as Debug>` and a newline.
fn record<T: Display>(report: &mut String, probe: &str, outcome: io::Result<T>) {
    let line = match outcome {
        Ok(detail) => format!("{probe}=ok:{detail}\n"),
        Err(e) => format!("{probe}=err:{:?}\n", e.kind()),
    };
    report.push_str(&line);
}

/// The number of entries `path` lists (entries that fail to read are not counted).
fn count_dir(path: &str) -> io::Result<usize> {
    Ok(std::fs::read_dir(path)?.filter(Result::is_ok).count())
}

/// One line per probe, in this order; details on success: `fs_read` bytes read, `fs_write` 1,
/// `fs_read_dir_*` entries listed, `tcp_connect` the peer, `udp_bind` the local address,
/// `dns_lookup` addresses found, `current_dir` the path.
fn probe() -> String {
    let mut report = String::new();
    record(
        &mut report,
        "fs_read",
        std::fs::read("/etc/passwd").map(|b| b.len()),
    );
    record(
        &mut report,
        "fs_write",
        std::fs::write("escape.txt", b"x").map(|()| 1),
    );
    record(&mut report, "fs_read_dir_dot", count_dir("."));
    record(&mut report, "fs_read_dir_root", count_dir("/"));
    record(
        &mut report,
        "tcp_connect",
        TcpStream::connect("127.0.0.1:80").and_then(|s| s.peer_addr()),
    );
    record(
        &mut report,
        "udp_bind",
        UdpSocket::bind("0.0.0.0:0").and_then(|s| s.local_addr()),
    );
    record(
        &mut report,
        "dns_lookup",
        "localhost:80".to_socket_addrs().map(Iterator::count),
    );
    // `vars_os`/`args_os`: the same counts, without `vars`' panic on non-Unicode entries.
    report.push_str(&format!("env_vars=count:{}\n", std::env::vars_os().count()));
    report.push_str(&format!("args=count:{}\n", std::env::args_os().count()));
    record(
        &mut report,
        "current_dir",
        std::env::current_dir().map(|p| p.display().to_string()),
    );
    report
}

impl Guest for Pvf {
    /// Head = the UTF-8 report of [`probe`].
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        Ok(ValidationResult {
            head_data: probe().into_bytes(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
