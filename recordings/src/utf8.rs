//! Turning a stream of byte chunks into text, one chunk at a time.
//!
//! asciicast stores terminal data as JSON strings, so the bytes must become valid UTF-8. Two
//! things get in the way: a process writes in chunks that may split a multi-byte character, and
//! it may write bytes that are not UTF-8 at all. [`Utf8Carry`] keeps the incomplete tail of one
//! chunk for the next, and replaces invalid bytes with U+FFFD exactly as
//! [`String::from_utf8_lossy`] does (one U+FFFD per maximal invalid subsequence), so decoding
//! chunk by chunk gives the same text as decoding all the bytes at once, wherever the cuts fall.

/// One stream's decoding state: the incomplete character carried over from the previous chunk.
///
/// Output and input are separate streams and need one carry each: a character split in the
/// output must not be completed by the user's next keystroke.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    /// The start of a character whose remaining bytes have not arrived yet.
    tail: [u8; 3],
    tail_len: usize,
    /// Reused buffers, so a steady stream of chunks allocates nothing once they have grown.
    joined: Vec<u8>,
    text: String,
}

impl Utf8Carry {
    /// Decodes the next chunk of the stream.
    ///
    /// The returned text may be empty (the chunk only started a character). When the carried
    /// tail is empty and the chunk is valid UTF-8 up to a possible incomplete end, the text
    /// borrows the chunk: the common case copies nothing.
    pub fn decode<'a>(&'a mut self, chunk: &'a [u8]) -> &'a str {
        let Utf8Carry {
            tail,
            tail_len,
            joined,
            text,
        } = self;
        let input: &[u8] = if *tail_len == 0 {
            chunk
        } else {
            joined.clear();
            joined.extend_from_slice(&tail[..*tail_len]);
            joined.extend_from_slice(chunk);
            joined
        };
        let cut = input.len() - incomplete_suffix_len(input);
        let (body, rest) = input.split_at(cut);
        tail[..rest.len()].copy_from_slice(rest);
        *tail_len = rest.len();
        match std::str::from_utf8(body) {
            Ok(valid) => valid,
            Err(_) => {
                text.clear();
                for piece in body.utf8_chunks() {
                    text.push_str(piece.valid());
                    if !piece.invalid().is_empty() {
                        text.push(char::REPLACEMENT_CHARACTER);
                    }
                }
                text
            }
        }
    }

    /// Ends the stream: an incomplete character still carried becomes one U+FFFD, as
    /// [`String::from_utf8_lossy`] does for input that ends mid-character.
    pub fn finish(&mut self) -> Option<&'static str> {
        let pending = self.tail_len > 0;
        self.tail_len = 0;
        pending.then_some("\u{FFFD}")
    }
}

/// The length of the incomplete character at the end of `bytes`: a valid start of a
/// multi-byte sequence that the end of the input cut short. Invalid bytes at the end do not
/// count: no later byte can make them valid.
fn incomplete_suffix_len(bytes: &[u8]) -> usize {
    // Only the last three bytes can hold an incomplete (at most 4-byte) character.
    let from = bytes.len().saturating_sub(3);
    let Some(last) = bytes[from..].utf8_chunks().last() else {
        return 0;
    };
    let invalid = last.invalid();
    match std::str::from_utf8(invalid) {
        // `error_len() == None` means "unexpected end of input", not "invalid byte".
        Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => invalid.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` cut at every possible pair of points and compares with the lossy
    /// decoding of the whole.
    fn assert_every_split_matches(bytes: &[u8]) {
        let whole = String::from_utf8_lossy(bytes);
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut carry = Utf8Carry::default();
                let mut text = String::new();
                for chunk in [&bytes[..i], &bytes[i..j], &bytes[j..]] {
                    text.push_str(carry.decode(chunk));
                }
                text.push_str(carry.finish().unwrap_or(""));
                assert_eq!(text, whole, "bytes {bytes:x?} cut at {i} and {j}");
            }
        }
    }

    #[test]
    fn any_split_of_valid_text_decodes_whole() {
        assert_every_split_matches("aé€😀z".as_bytes());
    }

    #[test]
    fn any_split_of_invalid_bytes_matches_from_utf8_lossy() {
        assert_every_split_matches(b"a\xF0\x9F\x98b\xE2\x82\x80\xC0\xAF\xED\xA0\x80\xFF\xE2\x82");
    }

    #[test]
    fn the_suffix_check_sees_only_a_valid_start_as_incomplete() {
        assert_eq!(incomplete_suffix_len(b"ab\xE2\x82"), 2);
        assert_eq!(incomplete_suffix_len(b"\xF0\x9F\x98"), 3);
        assert_eq!(incomplete_suffix_len(b"ab\x80"), 0);
        assert_eq!(incomplete_suffix_len(b"\xE2\x82\xAC"), 0);
        assert_eq!(incomplete_suffix_len(b"\xC0"), 0);
    }
}
