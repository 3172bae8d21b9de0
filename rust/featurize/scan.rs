//! The text scan behind `hash-v1`: character classes, FNV-1a + murmur3 hashing into signed
//! buckets, word and character n-gram sinks, and the per-turn statistics the dense features
//! use. See the parent module for the scheme.

use super::*;

/// The murmur3 64-bit finaliser: full avalanche, so FNV's weak low bits do not pick buckets.
#[inline]
pub(super) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[inline]
pub(super) fn fnv_byte(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

// Character classes. ASCII characters are looked up in a table; the rest go through
// `non_ascii_class`. Together they define tokenisation and the dense counts of `hash-v1`.
pub(super) const C_WS: u16 = 1;
pub(super) const C_WORD: u16 = 2;
pub(super) const C_DIGIT: u16 = 4;
pub(super) const C_MATH: u16 = 8;
pub(super) const C_ALPHA: u16 = 16;
pub(super) const C_QUESTION: u16 = 32;
pub(super) const C_NEWLINE: u16 = 64;
pub(super) const C_BACKTICK: u16 = 128;
pub(super) const C_BACKSLASH: u16 = 256;
pub(super) const C_NON_ASCII: u16 = 512;

pub(super) const fn ascii_class(b: u8) -> u16 {
    let mut c = 0;
    if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        c |= C_WS;
    }
    if b.is_ascii_alphanumeric() || b == b'_' {
        c |= C_WORD;
    }
    if b.is_ascii_digit() {
        c |= C_DIGIT;
    }
    if b.is_ascii_alphabetic() {
        c |= C_ALPHA;
    }
    if matches!(
        b,
        b'+' | b'-' | b'*' | b'/' | b'=' | b'^' | b'<' | b'>' | b'%'
    ) {
        c |= C_MATH;
    }
    match b {
        b'?' => c |= C_QUESTION,
        b'\n' => c |= C_NEWLINE,
        b'`' => c |= C_BACKTICK,
        b'\\' => c |= C_BACKSLASH,
        _ => {}
    }
    c
}

pub(super) const ASCII_CLASS: [u16; 128] = {
    let mut t = [0u16; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_class(i as u8);
        i += 1;
    }
    t
};

/// Word characters as hashed: ASCII letters lowercased, ASCII digits mapped to `0`.
pub(super) const ASCII_WORD_BYTE: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = if b.is_ascii_digit() {
            b'0'
        } else {
            b.to_ascii_lowercase()
        };
        i += 1;
    }
    t
};

pub(super) fn non_ascii_class(c: char) -> u16 {
    if c.is_whitespace() {
        return C_WS | C_NON_ASCII;
    }
    if UNICODE_SYMBOLS.contains(&c) {
        let mut cls = C_NON_ASCII;
        if UNICODE_MATH.contains(&c) {
            cls |= C_MATH;
        }
        if c == '？' {
            cls |= C_QUESTION;
        }
        return cls;
    }
    C_WORD | C_NON_ASCII
}

#[inline]
pub(super) fn class_of(c: char) -> u16 {
    match ASCII_CLASS.get(c as usize) {
        Some(&cls) => cls,
        None => non_ascii_class(c),
    }
}

#[inline]
pub(super) fn flag(cls: u16, f: u16) -> u64 {
    u64::from(cls & f != 0)
}

/// Per-turn counts gathered in the tokenising pass.
#[derive(Default, Clone, Copy)]
pub(super) struct TextStats {
    pub(super) chars: u64,
    pub(super) non_ws: u64,
    pub(super) digits: u64,
    pub(super) math: u64,
    pub(super) questions: u64,
    pub(super) fences: u64,
    pub(super) newlines: u64,
    pub(super) non_ascii: u64,
    pub(super) tokens: u64,
}

impl TextStats {
    pub(super) fn estimate_tokens(&self) -> u64 {
        let by_chars = self.chars.div_ceil(4);
        let by_tokens = (self.tokens * 4).div_ceil(3);
        by_chars.max(by_tokens)
    }
}

/// Adds `w` with the hash's sign to its bucket of `buf`.
#[inline]
pub(super) fn hash_add(buf: &mut [f64], h: u64, w: f64) {
    let n = buf.len() as u128;
    // Multiply-shift on the high bits: uniform, no modulo bias; the low bit is the sign.
    let j = ((u128::from(h) * n) >> 64) as usize;
    let s = if h & 1 == 1 { w } else { -w };
    if let Some(v) = buf.get_mut(j) {
        *v += s;
    }
}

/// Word unigram and bigram hashing of one turn.
pub(super) struct WordSink<'b> {
    pub(super) uni: &'b mut [f64],
    pub(super) bi: &'b mut [f64],
    pub(super) w: f64,
    pub(super) seed_mix: u64,
    pub(super) prev: Option<u64>,
}

impl WordSink<'_> {
    #[inline]
    pub(super) fn token(&mut self, h: u64) {
        hash_add(self.uni, fmix64(h ^ NS_UNIGRAM ^ self.seed_mix), self.w);
        if let Some(p) = self.prev {
            let pair = p.wrapping_mul(FNV_PRIME) ^ h.rotate_left(23);
            hash_add(self.bi, fmix64(pair ^ NS_BIGRAM ^ self.seed_mix), self.w);
        }
        self.prev = Some(h);
    }
}

/// Character n-grams of one turn: ASCII-lowercased, whitespace runs collapsed to one space,
/// padded with a space at each end. A text shorter than `n` (with its padding) gives one gram,
/// the whole padded text; empty or whitespace-only text gives none.
pub(super) struct CharSink<'b> {
    pub(super) buf: &'b mut [f64],
    pub(super) n: usize,
    pub(super) seed_mix: u64,
    pub(super) window: [u32; MAX_CHAR_NGRAM],
    pub(super) len: usize,
    pub(super) last_space: bool,
}

impl<'b> CharSink<'b> {
    pub(super) fn new(buf: &'b mut [f64], n: usize, seed_mix: u64) -> Self {
        let mut s = CharSink {
            buf,
            n: n.clamp(1, MAX_CHAR_NGRAM),
            seed_mix,
            window: [0; MAX_CHAR_NGRAM],
            len: 0,
            last_space: false,
        };
        s.push(' ');
        s
    }

    #[inline]
    pub(super) fn gram(&mut self, codes_from: usize) {
        let mut h = FNV_OFFSET ^ NS_CHAR;
        for &c in self.window.get(codes_from..self.n).unwrap_or(&[]) {
            h = (h ^ u64::from(c)).wrapping_mul(FNV_PRIME);
        }
        hash_add(self.buf, fmix64(h ^ self.seed_mix), W_UNIT);
    }

    #[inline]
    pub(super) fn push(&mut self, c: char) {
        self.last_space = c == ' ';
        self.window.copy_within(1..self.n, 0);
        if let Some(slot) = self.window.get_mut(self.n - 1) {
            *slot = u32::from(c);
        }
        self.len += 1;
        if self.len >= self.n {
            self.gram(0);
        }
    }

    #[inline]
    pub(super) fn char(&mut self, c: char, whitespace: bool) {
        if whitespace {
            if !self.last_space {
                self.push(' ');
            }
        } else {
            self.push(c.to_ascii_lowercase());
        }
    }

    pub(super) fn finish(mut self) {
        if !self.last_space {
            self.push(' ');
        }
        if self.len > 1 && self.len < self.n {
            self.gram(self.n - self.len);
        }
    }
}

pub(super) const W_UNIT: f64 = 1.0;

/// One pass over a turn's text: statistics always; word unigram/bigram hashes into `words` and
/// character n-gram hashes into `chars` when given.
pub(super) fn scan(
    text: &str,
    mut words: Option<WordSink<'_>>,
    mut chars: Option<CharSink<'_>>,
) -> TextStats {
    let mut st = TextStats::default();
    let mut word: u64 = FNV_OFFSET;
    let mut in_word = false;
    let mut backticks = 0u32;
    let mut prev_backslash = false;
    for c in text.chars() {
        let cls = class_of(c);
        let ws = cls & C_WS != 0;
        st.chars += 1;
        if cls & C_BACKTICK != 0 {
            backticks += 1;
        } else if backticks != 0 {
            st.fences += u64::from(backticks >= 3);
            backticks = 0;
        }
        st.newlines += flag(cls, C_NEWLINE);
        st.non_ws += u64::from(!ws);
        st.digits += flag(cls, C_DIGIT);
        st.questions += flag(cls, C_QUESTION);
        st.non_ascii += u64::from(!ws) & flag(cls, C_NON_ASCII);
        // A LaTeX command (`\` then a letter) counts once, at its first letter.
        st.math += flag(cls, C_MATH) | (u64::from(prev_backslash) & flag(cls, C_ALPHA));
        prev_backslash = cls & C_BACKSLASH != 0;

        if cls & C_WORD != 0 {
            if words.is_some() {
                match ASCII_WORD_BYTE.get(c as usize) {
                    Some(&b) => word = fnv_byte(word, b),
                    None => {
                        let mut buf = [0u8; 4];
                        for &b in c.encode_utf8(&mut buf).as_bytes() {
                            word = fnv_byte(word, b);
                        }
                    }
                }
            }
            in_word = true;
        } else {
            if in_word {
                st.tokens += 1;
                if let Some(ws) = words.as_mut() {
                    ws.token(word);
                }
                word = FNV_OFFSET;
                in_word = false;
            }
            if !ws {
                st.tokens += 1;
                if let Some(sink) = words.as_mut() {
                    let mut buf = [0u8; 4];
                    let h = c
                        .encode_utf8(&mut buf)
                        .as_bytes()
                        .iter()
                        .fold(FNV_OFFSET, |h, &b| fnv_byte(h, b));
                    sink.token(h);
                }
            }
        }
        if let Some(cs) = chars.as_mut() {
            cs.char(c, ws);
        }
    }
    if in_word {
        st.tokens += 1;
        if let Some(ws) = words.as_mut() {
            ws.token(word);
        }
    }
    st.fences += u64::from(backticks >= 3);
    if let Some(cs) = chars {
        cs.finish();
    }
    st
}
