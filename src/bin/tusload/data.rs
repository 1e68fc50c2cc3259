//! The reproducible upload content and the ids file.
//!
//! Content: one buffer of `BUF_LEN` (a power of two) bytes is filled once with
//! xorshift64* output (state = splitmix64(seed), each u64 written little-endian). Byte `i`
//! of an upload with seed offset `o` is `buf[(i + o) % BUF_LEN]`. The ids file records
//! `<url> <length> <seed_offset>` per upload, after a `# tusload seed=S buf=B` line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

/// Length of the content buffer (64 MiB).
pub const BUF_LEN: usize = 64 << 20;

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64* (Vigna).
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(splitmix64(seed).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The content buffer plus the write window used when streaming it.
pub struct Pattern {
    buf: Box<[u8]>,
    window: usize,
}

impl Pattern {
    /// `len` must be a power of two (and a multiple of 8).
    pub fn new(seed: u64, len: usize, window: usize) -> Pattern {
        assert!(len.is_power_of_two() && len >= 8);
        let mut buf = vec![0u8; len].into_boxed_slice();
        let mut rng = Xorshift::new(seed);
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        Pattern {
            buf,
            window: window.clamp(1, len),
        }
    }

    /// The contiguous run of content starting at pattern position `pos`, at most `max`
    /// bytes (and at most the window).
    fn run(&self, pos: u64, max: u64) -> &[u8] {
        let start = (pos & (self.buf.len() as u64 - 1)) as usize;
        let n = (self.buf.len() - start).min(self.window).min(max as usize);
        &self.buf[start..start + n]
    }

    /// Writes `len` bytes from pattern position `pos`, one window-sized `write_all` at a time.
    pub fn write_to<W: Write>(&self, w: &mut W, mut pos: u64, mut len: u64) -> io::Result<()> {
        while len > 0 {
            let run = self.run(pos, len);
            w.write_all(run)?;
            pos += run.len() as u64;
            len -= run.len() as u64;
        }
        Ok(())
    }

    /// Appends `len` bytes from pattern position `pos` (for small inline bodies).
    pub fn append_to(&self, v: &mut Vec<u8>, mut pos: u64, mut len: u64) {
        while len > 0 {
            let run = self.run(pos, len);
            v.extend_from_slice(run);
            pos += run.len() as u64;
            len -= run.len() as u64;
        }
    }

    /// The index in `data` of the first byte differing from the content at `pos`.
    pub fn first_mismatch(&self, mut pos: u64, data: &[u8]) -> Option<usize> {
        let mut done = 0;
        while done < data.len() {
            let run = self.run(pos, (data.len() - done) as u64);
            let got = &data[done..done + run.len()];
            if got != run {
                let i = got.iter().zip(run).position(|(a, b)| a != b).unwrap_or(0);
                return Some(done + i);
            }
            done += run.len();
            pos += run.len() as u64;
        }
        None
    }
}

/// The seed offset of upload number `n` of stream `stream` (a thread, a mode).
pub fn seed_offset(seed: u64, stream: u64, n: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream.wrapping_add(0x51_7cc1_b727_220a)) ^ n) % BUF_LEN as u64
}

/// One line of the ids file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLine {
    pub url: String,
    pub length: u64,
    pub seed_offset: u64,
}

pub fn write_ids(path: &Path, seed: u64, lines: &[IdLine]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "# tusload seed={seed} buf={BUF_LEN}")?;
    for l in lines {
        writeln!(w, "{} {} {}", l.url, l.length, l.seed_offset)?;
    }
    w.flush()
}

/// Parsed ids file: the seed from the header line (if any) and the uploads.
pub struct Ids {
    pub seed: Option<u64>,
    pub lines: Vec<IdLine>,
}

pub fn read_ids(path: &Path) -> Result<Ids, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_ids(BufReader::new(f)).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_ids<R: BufRead>(r: R) -> Result<Ids, String> {
    let mut ids = Ids {
        seed: None,
        lines: Vec::new(),
    };
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            for kv in comment.split_whitespace() {
                match kv.split_once('=') {
                    Some(("seed", v)) => ids.seed = v.parse().ok(),
                    Some(("buf", v)) if v != BUF_LEN.to_string() => {
                        return Err(format!("written with buf={v}, this build uses {BUF_LEN}"))
                    }
                    _ => {}
                }
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let bad = || format!("line {}: expected `<url> <length> <seed_offset>`", n + 1);
        let url = f.next().ok_or_else(bad)?.to_owned();
        let length = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let seed_offset = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        ids.lines.push(IdLine {
            url,
            length,
            seed_offset,
        });
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_reproducible_and_wraps() {
        let p = Pattern::new(1, 1024, 100);
        let q = Pattern::new(1, 1024, 7);
        assert_eq!(p.buf, q.buf);
        assert_ne!(Pattern::new(2, 1024, 100).buf, p.buf);
        let mut out = Vec::new();
        p.write_to(&mut out, 1000, 3000).unwrap();
        assert_eq!(out.len(), 3000);
        for (i, b) in out.iter().enumerate() {
            assert_eq!(*b, p.buf[(1000 + i) % 1024]);
        }
        let mut v = Vec::new();
        q.append_to(&mut v, 1000, 3000);
        assert_eq!(v, out);
        assert_eq!(p.first_mismatch(1000, &out), None);
        out[2500] ^= 1;
        assert_eq!(q.first_mismatch(1000, &out), Some(2500));
    }

    #[test]
    fn ids_roundtrip() {
        let text = format!(
            "# tusload seed=7 buf={BUF_LEN}\nhttp://h/files/a 10 3\n\nhttp://h/files/b 0 0\n"
        );
        let ids = parse_ids(text.as_bytes()).unwrap();
        assert_eq!(ids.seed, Some(7));
        assert_eq!(ids.lines.len(), 2);
        assert_eq!(ids.lines[0].url, "http://h/files/a");
        assert_eq!((ids.lines[0].length, ids.lines[0].seed_offset), (10, 3));
        assert!(parse_ids("http://h/files/a 10\n".as_bytes()).is_err());
        assert!(parse_ids("# tusload seed=1 buf=1024\n".as_bytes()).is_err());
    }
}
