//! AFL++ target: see [`kdbg_fuzz::recordings_reader`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::recordings_reader(data));
}
