//! AFL++ target: see [`kdbg_fuzz::relay_frame`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::relay_frame(data));
}
