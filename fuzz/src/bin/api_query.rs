//! AFL++ target: see [`kdbg_fuzz::api_query`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::api_query(data));
}
