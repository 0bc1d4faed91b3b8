#![no_main]
//! Any argument list: the `nexus` parser returns a command or a usage error,
//! never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args = std::iter::once("nexus".to_string()).chain(text.split('\0').map(str::to_string));
    let _ = nexus_cli::Cli::try_parse_args(args);
});
