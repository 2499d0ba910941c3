//! AFL++ target: see [`kdbg_fuzz::agent_config`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::agent_config(data));
}
