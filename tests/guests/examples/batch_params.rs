//! Prints a `pvf validate` params file whose block data is a batch for `sig_verify` /
//! `sig_verify_wasm`: `cargo run -p pvf-test-guests --example batch_params -- N [SEED [BAD]]`
//! (N signed items; with BAD, item BAD's signature does not verify). The expected verdict goes
//! to stderr.

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: N [SEED [BAD]]"))
        .collect();
    let (n, seed) = match args[..] {
        [n] => (n as usize, 0),
        [n, seed] | [n, seed, _] => (n as usize, seed),
        _ => panic!("usage: batch_params N [SEED [BAD]]"),
    };
    let data = match args.get(2) {
        Some(&bad) => pvf_test_guests::batches::batch_with_bad_signature(n, bad as usize, seed),
        None => pvf_test_guests::batches::signed_batch(n, seed),
    };
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "{{\"parent_head\": \"0x00\", \"block_data\": \"0x{hex}\", \"relay_parent_number\": 7}}"
    );
    eprintln!(
        "expected: {:?}",
        pvf_test_guests::batches::expected_verdict(&data)
    );
}
