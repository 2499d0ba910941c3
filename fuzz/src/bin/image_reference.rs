//! AFL++ target: see [`kdbg_fuzz::image_reference`].

fn main() {
    afl::fuzz!(|data: &[u8]| kdbg_fuzz::image_reference(data));
}
