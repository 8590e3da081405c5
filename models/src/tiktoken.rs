//! Whisper's BPE vocabulary from a `.tiktoken` file, in rank order.
//!
//! Each line is `base64(token bytes) SPACE rank`. The ggml file stores the tokens in
//! rank order, so ranks must run 0..n without gaps. whisper.cpp adds the special
//! tokens (`<|endoftext|>`, languages, timestamps) itself from `n_vocab`.

use super::ModelError;

/// Parses a `.tiktoken` file into token byte strings indexed by rank.
pub fn parse(text: &[u8]) -> Result<Vec<Vec<u8>>, ModelError> {
    let mut tokens: Vec<Option<Vec<u8>>> = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad = |m: &str| ModelError::new(format!("tiktoken line {}: {m}", i + 1));
        let sp = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no space"))?;
        let token = base64_decode(&line[..sp]).ok_or_else(|| bad("bad base64"))?;
        let rank: usize = std::str::from_utf8(&line[sp + 1..])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad("bad rank"))?;
        if rank >= tokens.len() {
            tokens.resize(rank + 1, None);
        }
        if tokens[rank].replace(token).is_some() {
            return Err(bad(&format!("rank {rank} appears twice")));
        }
    }
    tokens
        .into_iter()
        .enumerate()
        .map(|(rank, t)| {
            t.ok_or_else(|| ModelError::new(format!("tiktoken: rank {rank} is missing")))
        })
        .collect()
}

/// Standard base64; padding is optional, as with Python's `b64decode` (the
/// multilingual vocabulary has an empty token written as `=`).
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let end = s.iter().position(|&c| c == b'=').unwrap_or(s.len());
    if s[end..].iter().any(|&c| c != b'=') {
        return None;
    }
    let mut out = Vec::with_capacity(end / 4 * 3 + 2);
    for chunk in s[..end].chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for &c in chunk {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * (4 - chunk.len()) as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ranks_in_order() {
        let t = parse(b"IQ== 0\nIg== 1\nSGVsbG8= 3\nIGJ5 2\n= 4\n").unwrap();
        assert_eq!(
            t,
            vec![
                b"!".to_vec(),
                b"\"".to_vec(),
                b" by".to_vec(),
                b"Hello".to_vec(),
                vec![]
            ]
        );
    }

    #[test]
    fn rejects_gaps_duplicates_and_garbage() {
        assert!(
            parse(b"IQ== 0\nIg== 2\n")
                .unwrap_err()
                .message
                .contains("rank 1")
        );
        assert!(parse(b"IQ== 0\nIg== 0\n").is_err());
        assert!(parse(b"I?== 0\n").is_err());
        assert!(parse(b"I=Q= 0\n").is_err());
        assert!(parse(b"IQ==I 0\n").is_err());
        assert!(parse(b"IQ==\n").is_err());
    }
}
