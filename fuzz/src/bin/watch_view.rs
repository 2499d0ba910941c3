//! AFL++ target: see [`kdbg_fuzz::watch_view`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::watch_view(data));
}
