//! AFL++ target: see [`kdbg_fuzz::registry_challenge`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::registry_challenge(data));
}
