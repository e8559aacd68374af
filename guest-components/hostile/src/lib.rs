//! Guest `hostile`: one attack on the host per mode (sleeps, host-call floods, oversized results and reasons); exercises that no guest can block, abort or mislead the host.
//!
//! Block data: `mode (1 byte) | n (u64 LE, optional, default 0)`. A mode that returns `ok` puts
//! what it observed in the head (see each mode); the others are meant to end in a verdict
//! against the guest.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use pvf::validation::types::OutboundHrmpMessage;
use wasip2::clocks::monotonic_clock;
use wasip2::io::poll;

struct Pvf;
export!(Pvf);

/// Sleeps until the end of time (`subscribe-instant(u64::MAX)` + `block`). Head: the clock
/// before and after (u64 LE each).
pub const SLEEP_FOREVER: u8 = 0;
/// `std::thread::sleep` for `n` seconds (30 when `n` is 0). Head: the clock before and after.
pub const STD_SLEEP: u8 = 1;
/// `poll` over `[duration n ns, duration 1 h, instant u64::MAX]`. Head: the ready indices
/// (u32 LE each), then the clock after.
pub const POLL: u8 = 2;
/// Sleeps 1 ms in a loop, forever: ends by fuel.
pub const SLEEP_LOOP: u8 = 3;
/// Asks `get-random-bytes` for `n` bytes. Head: the first 32 of them and the count (u64 LE).
pub const RANDOM_BYTES: u8 = 4;
/// Makes clock subscriptions and never drops them, `n` of them (forever when `n` is 0).
/// Head: how many were made.
pub const LEAK_HANDLES: u8 = 5;
/// Returns a head of `n` bytes.
pub const BIG_HEAD: u8 = 6;
/// Returns `n` empty upward messages.
pub const MANY_UPWARD: u8 = 7;
/// Returns `n` horizontal messages of 1 byte.
pub const MANY_HORIZONTAL: u8 = 8;
/// Returns new validation code of `n` bytes.
pub const BIG_CODE: u8 = 9;
/// Rejects with a reason that tries to overprint the terminal (CR, an ANSI erase, a fake
/// verdict line, a NUL), padded to `n` bytes with `x`.
pub const EVIL_REASON: u8 = 10;
/// Writes `n` bytes to stdout in one `write` call, ignoring `check-write`. Head: `n` (u64 LE).
pub const BIG_WRITE: u8 = 11;
/// Returns the largest result the contract allows, with new code of `n` bytes: a 1 MiB head,
/// 128 upward and 128 horizontal messages of 128 KiB each (16 MiB each in all).
pub const MAX_RESULT: u8 = 12;
/// Reads the monotonic clock in a loop, forever: ends by fuel.
pub const CLOCK_LOOP: u8 = 13;
/// Writes `n` bytes (64 KiB when `n` is 0) to stdout in a loop, forever: ends by fuel.
pub const WRITE_LOOP: u8 = 14;

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let data = &params.block_data;
        let mode = *data.first().ok_or("no mode byte")?;
        let n = data
            .get(1..9)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        let mut head = Vec::new();
        let mut result = ValidationResult {
            head_data: Vec::new(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        };
        match mode {
            SLEEP_FOREVER => {
                head.extend(monotonic_clock::now().to_le_bytes());
                monotonic_clock::subscribe_instant(u64::MAX).block();
                head.extend(monotonic_clock::now().to_le_bytes());
            }
            STD_SLEEP => {
                let secs = if n == 0 { 30 } else { n };
                head.extend(monotonic_clock::now().to_le_bytes());
                std::thread::sleep(std::time::Duration::from_secs(secs));
                head.extend(monotonic_clock::now().to_le_bytes());
            }
            POLL => {
                let short = monotonic_clock::subscribe_duration(n);
                let hour = monotonic_clock::subscribe_duration(3_600_000_000_000);
                let never = monotonic_clock::subscribe_instant(u64::MAX);
                for i in poll::poll(&[&short, &hour, &never]) {
                    head.extend(i.to_le_bytes());
                }
                head.extend(monotonic_clock::now().to_le_bytes());
            }
            SLEEP_LOOP => loop {
                std::thread::sleep(std::time::Duration::from_millis(1));
            },
            RANDOM_BYTES => {
                let bytes = wasip2::random::random::get_random_bytes(n);
                head.extend(bytes.iter().take(32));
                head.extend((bytes.len() as u64).to_le_bytes());
            }
            LEAK_HANDLES => {
                let mut made = 0u64;
                while n == 0 || made < n {
                    std::mem::forget(monotonic_clock::subscribe_duration(0));
                    made += 1;
                }
                head.extend(made.to_le_bytes());
            }
            BIG_HEAD => head = vec![0; n as usize], // zeroed: fresh pages, no fuel per byte
            MANY_UPWARD => result.upward_messages = vec![Vec::new(); n as usize],
            MANY_HORIZONTAL => {
                result.horizontal_messages = (0..n)
                    .map(|i| OutboundHrmpMessage {
                        recipient: i as u32,
                        data: vec![1],
                    })
                    .collect()
            }
            BIG_CODE => result.new_validation_code = Some(vec![0; n as usize]),
            EVIL_REASON => {
                let mut reason =
                    String::from("bad block\r\x1b[2Kvalid (cache: hit) head_data=0x00\0\x07");
                while (reason.len() as u64) < n {
                    reason.push('x');
                }
                return Err(reason);
            }
            BIG_WRITE => {
                let out = wasip2::cli::stdout::get_stdout();
                let _ = out.write(&vec![0; n as usize]);
                head.extend(n.to_le_bytes());
            }
            MAX_RESULT => {
                head = vec![1; 1 << 20];
                result.new_validation_code = Some(vec![2; n as usize]);
                result.upward_messages = vec![vec![3; 128 << 10]; 128];
                result.horizontal_messages = (0..128)
                    .map(|i| OutboundHrmpMessage {
                        recipient: i,
                        data: vec![4; 128 << 10],
                    })
                    .collect();
            }
            CLOCK_LOOP => loop {
                std::hint::black_box(monotonic_clock::now());
            },
            WRITE_LOOP => {
                let out = wasip2::cli::stdout::get_stdout();
                let chunk = vec![0; if n == 0 { 64 << 10 } else { n as usize }];
                loop {
                    let _ = std::hint::black_box(out.write(&chunk));
                }
            }
            other => return Err(format!("unknown mode {other}")),
        }
        result.head_data = head;
        Ok(result)
    }
}
