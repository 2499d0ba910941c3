//! AFL++ target: see [`kdbg_fuzz::relay_resize`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::relay_resize(data));
}
