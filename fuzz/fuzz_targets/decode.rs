//! Feeds arbitrary bytes to every decoder a peer can reach: each must return an error or a
//! value, never panic, hang or allocate without bound.
//!
//! Run with `cargo fuzz run decode` (needs cargo-fuzz and a nightly toolchain).

#![no_main]

use drover_protocol::codec::decode;
use drover_protocol::{FetchReply, FetchRequest, FromClient, FromWorker, Hello, ToClient, ToWorker, Welcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Hello>(data);
    let _ = decode::<Welcome>(data);
    let _ = decode::<Vec<FromClient>>(data);
    let _ = decode::<Vec<FromWorker>>(data);
    let _ = decode::<Vec<ToClient>>(data);
    let _ = decode::<Vec<ToWorker>>(data);
    let _ = decode::<FetchRequest>(data);
    let _ = decode::<FetchReply>(data);
    // And as a frame: the length prefix is checked before any allocation.
    if data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len <= data.len() - 4 {
            let _ = decode::<Vec<FromClient>>(&data[4..4 + len]);
        }
    }
});
