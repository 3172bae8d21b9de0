//! Request featurization kernel: a chat request -> a fixed-size, L2-normalised f64 vector.
//!
//! Scheme `hash-v1` (the version string is `hash-v1-d{dim}`, with `-n{char_ngram}` and
//! `-s{seed}` appended when they differ from 3 and 0). Layout of `x: (dim,)`:
//!
//! * `x[0..N_DENSE]`: dense length/structure signals, each in [0, 1] (names in [`DENSE_NAMES`]):
//!   0 `bias` (1), 1 `log_tokens` (whole request), 2 `log_last_tokens` (last user turn),
//!   3 `last_share` (last user turn's share of all characters), 4 `log_turns`, 5 `has_system`,
//!   6 `digit_frac`, 7 `log_math`, 8 `log_questions`, 9 `log_code_fences` (whole request),
//!   10 `log_newlines`, 11 `non_ascii_frac`. Features 6-8, 10 and 11 look at the last user turn.
//!   The `log_*` features are `min(1, L(count) / L(cap))` with the caps below, where `L(v)` is
//!   `log2(1 + v)` interpolated linearly between powers of two (integer and IEEE-exact
//!   arithmetic only, so results are bit-identical across platforms; no libm).
//! * `x[N_DENSE..dim]`: signed feature hashing (Weinberger et al. 2009) of three groups, each
//!   L2-normalised on its own, weighted and summed, and the sum L2-normalised again:
//!   word unigrams (weight 1), word bigrams within a turn (weight 0.5), and character n-grams of
//!   the last user turn (weight 1). Words of the last user turn count 1, of other turns 0.5.
//!
//! The whole vector is then L2-normalised (the bias keeps it non-zero even for empty text).
//!
//! Stability: every hash is FNV-1a (over UTF-8 bytes for words, over code points for character
//! n-grams) followed by the MurmurHash3 64-bit finaliser, with fixed namespace constants and the
//! seed mixed in; nothing depends on the platform, the process, or Unicode tables (lowercasing
//! is ASCII-only, word characters are ASCII alphanumerics, `_` and non-ASCII non-whitespace
//! characters other than the fixed symbol list [`UNICODE_SYMBOLS`]). Changing any of that is a
//! new scheme version.
//!
//! Tokenisation: a word is a maximal run of word characters (ASCII-lowercased, ASCII digits
//! mapped to `0` so that numbers hash by shape); every other non-whitespace character is a
//! one-character symbol token. `estimate_tokens` is
//! `sum over turns of ceil(max(chars / 4, 4/3 * tokens))` plus 3 per message for chat lists
//! (role markers of the chat template), a cheap stand-in for a real tokenizer.

use crate::error::{CoreError, CoreResult};

mod scan;
use scan::*;

/// Name of the hashing scheme; part of every version string.
pub const SCHEME: &str = "hash-v1";
/// Number of dense structure features at the start of the vector.
pub const N_DENSE: usize = 12;
/// Smallest allowed `dim` (at least 4 hashed buckets).
pub const MIN_DIM: usize = N_DENSE + 4;
/// Largest allowed `dim`.
pub const MAX_DIM: usize = 1 << 20;
/// Default character n-gram length.
pub const DEFAULT_CHAR_NGRAM: usize = 3;
/// Largest allowed character n-gram length.
pub const MAX_CHAR_NGRAM: usize = 8;

/// Names of `x[0..N_DENSE]`, in order.
pub const DENSE_NAMES: [&str; N_DENSE] = [
    "bias",
    "log_tokens",
    "log_last_tokens",
    "last_share",
    "log_turns",
    "has_system",
    "digit_frac",
    "log_math",
    "log_questions",
    "log_code_fences",
    "log_newlines",
    "non_ascii_frac",
];

const CAP_TOKENS: u64 = 32768;
const CAP_TURNS: u64 = 64;
const CAP_MATH: u64 = 64;
const CAP_QUESTIONS: u64 = 8;
const CAP_FENCES: u64 = 8;
const CAP_NEWLINES: u64 = 128;

const W_UNIGRAM: f64 = 1.0;
const W_BIGRAM: f64 = 0.5;
const W_CHAR: f64 = 1.0;
const W_HISTORY: f64 = 0.5;
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 3;

/// Non-ASCII characters that are symbol tokens rather than word characters (math operators and
/// common typographic / full-width punctuation). Fixed as part of `hash-v1`.
pub const UNICODE_SYMBOLS: &[char] = &[
    '×', '÷', '±', '∓', '≤', '≥', '≠', '≈', '≡', '∑', '∏', '∫', '√', '∞', '∂', '∇', '∈', '∉', '⊂',
    '⊆', '∪', '∩', '∀', '∃', '→', '←', '↔', '⇒', '⇔', '·', '−', '°', '²', '³', 'π', '“', '”', '‘',
    '’', '…', '—', '–', '，', '。', '？', '！', '：', '；', '（', '）', '、',
];
/// Non-ASCII characters counted by `log_math` (the ASCII ones are `+ - * / = ^ < > %`, plus
/// `\` followed by an ASCII letter, a LaTeX command).
const UNICODE_MATH: &[char] = &[
    '×', '÷', '±', '∓', '≤', '≥', '≠', '≈', '≡', '∑', '∏', '∫', '√', '∞', '∂', '∇', '∈', '∉', '⊂',
    '⊆', '∪', '∩', '∀', '∃', '→', '⇒', '⇔', '·', '−', '²', '³', 'π',
];

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const NS_UNIGRAM: u64 = 0x7531_a0c4_1f5e_29b3;
const NS_BIGRAM: u64 = 0x2d6e_94f1_b803_c7a5;
const NS_CHAR: u64 = 0xc19b_5a3e_64d2_f80f;
const SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Who wrote a message. Unknown roles (tool, function, ...) are `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Other,
}

impl Role {
    /// `"system"` and `"developer"` are `System`; anything unknown is `Other`.
    pub fn parse(s: &str) -> Role {
        match s {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => Role::Other,
        }
    }
}

/// One message of a request.
#[derive(Clone, Copy, Debug)]
pub struct Turn<'a> {
    pub role: Role,
    pub content: &'a str,
}

/// A request: its messages, and whether it came as a bare prompt string (no chat template).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub turns: &'a [Turn<'a>],
    pub bare: bool,
}

/// The featurizer: configuration only, so it is `Sync` and needs no lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Featurizer {
    dim: usize,
    char_ngram: usize,
    seed: u64,
    seed_mix: u64,
}

impl Featurizer {
    pub fn new(dim: usize, char_ngram: usize, seed: u64) -> CoreResult<Self> {
        if !(MIN_DIM..=MAX_DIM).contains(&dim) {
            return Err(CoreError::Config(format!(
                "featurizer dim must be in {MIN_DIM}..={MAX_DIM} ({N_DENSE} dense features plus \
                 at least 4 hashed buckets), got {dim}"
            )));
        }
        if !(1..=MAX_CHAR_NGRAM).contains(&char_ngram) {
            return Err(CoreError::Config(format!(
                "char_ngram must be in 1..={MAX_CHAR_NGRAM}, got {char_ngram}"
            )));
        }
        Ok(Featurizer {
            dim,
            char_ngram,
            seed,
            seed_mix: fmix64(seed ^ SEED_SALT),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn char_ngram(&self) -> usize {
        self.char_ngram
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `hash-v1-d{dim}`, plus `-n{char_ngram}` / `-s{seed}` when not the defaults.
    pub fn version(&self) -> String {
        let mut v = format!("{SCHEME}-d{}", self.dim);
        if self.char_ngram != DEFAULT_CHAR_NGRAM {
            v.push_str(&format!("-n{}", self.char_ngram));
        }
        if self.seed != 0 {
            v.push_str(&format!("-s{}", self.seed));
        }
        v
    }

    /// The features of one request, a new `(dim,)` vector.
    pub fn featurize(&self, req: Request<'_>) -> CoreResult<Vec<f64>> {
        let mut out = vec![0.0; self.dim];
        self.featurize_into(req, &mut out)?;
        Ok(out)
    }

    /// Features of many requests, row-major `(n, dim)`.
    pub fn featurize_many(&self, reqs: &[Request<'_>]) -> CoreResult<Vec<f64>> {
        let mut out = vec![0.0; self.dim * reqs.len()];
        for (req, row) in reqs.iter().zip(out.chunks_exact_mut(self.dim)) {
            self.featurize_into(*req, row)?;
        }
        Ok(out)
    }

    /// The features and the token estimate of one request from a single pass.
    pub fn featurize_with_tokens(&self, req: Request<'_>) -> CoreResult<(Vec<f64>, u64)> {
        let mut out = vec![0.0; self.dim];
        let tokens = self.featurize_into(req, &mut out)?;
        Ok((out, tokens))
    }

    /// Writes the features of `req` into `out` (length `dim`), overwriting it; returns the
    /// request's token estimate (the same as [`Featurizer::estimate_tokens`]).
    pub fn featurize_into(&self, req: Request<'_>, out: &mut [f64]) -> CoreResult<u64> {
        check_request(req)?;
        if out.len() != self.dim {
            return Err(CoreError::Shape(format!(
                "output has length {}, expected dim = {}",
                out.len(),
                self.dim
            )));
        }
        out.fill(0.0);
        let (dense, hashed) = out.split_at_mut(N_DENSE);
        let h = hashed.len();
        // Scratch for the three groups (unigram, bigram, char) in one allocation.
        let mut scratch = vec![0.0; 3 * h];
        let (uni, rest) = scratch.split_at_mut(h);
        let (bi, ch) = rest.split_at_mut(h);

        let last = last_user_index(req.turns);
        let mut total = TextStats::default();
        let mut last_stats = TextStats::default();
        let mut per_turn_tokens = 0u64;
        let mut has_system = false;
        for (i, t) in req.turns.iter().enumerate() {
            has_system |= t.role == Role::System;
            let words = WordSink {
                uni: &mut *uni,
                bi: &mut *bi,
                w: if i == last { 1.0 } else { W_HISTORY },
                seed_mix: self.seed_mix,
                prev: None,
            };
            let chars =
                (i == last).then(|| CharSink::new(&mut *ch, self.char_ngram, self.seed_mix));
            let st = scan(t.content, Some(words), chars);
            add_stats(&mut total, &st);
            per_turn_tokens += st.estimate_tokens();
            if i == last {
                last_stats = st;
            }
        }

        // Combine the groups: each unit-normalised, weighted, summed, renormalised.
        let (nu, nb, nc) = (norm(uni), norm(bi), norm(ch));
        for (j, v) in hashed.iter_mut().enumerate() {
            let mut s = 0.0;
            if nu > 0.0 {
                s += W_UNIGRAM * uni[j] / nu;
            }
            if nb > 0.0 {
                s += W_BIGRAM * bi[j] / nb;
            }
            if nc > 0.0 {
                s += W_CHAR * ch[j] / nc;
            }
            *v = s;
        }
        scale_to_unit(hashed);

        let tokens = request_tokens(req, per_turn_tokens);
        let frac = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        dense[0] = 1.0;
        dense[1] = log_cap(tokens, CAP_TOKENS);
        dense[2] = log_cap(last_stats.estimate_tokens(), CAP_TOKENS);
        dense[3] = frac(last_stats.chars, total.chars);
        dense[4] = log_cap(req.turns.len() as u64, CAP_TURNS);
        dense[5] = if has_system { 1.0 } else { 0.0 };
        dense[6] = frac(last_stats.digits, last_stats.non_ws);
        dense[7] = log_cap(last_stats.math, CAP_MATH);
        dense[8] = log_cap(last_stats.questions, CAP_QUESTIONS);
        dense[9] = log_cap(total.fences, CAP_FENCES);
        dense[10] = log_cap(last_stats.newlines, CAP_NEWLINES);
        dense[11] = frac(last_stats.non_ascii, last_stats.non_ws);

        scale_to_unit(out);
        Ok(tokens)
    }

    /// Estimated prompt tokens of a request (see the module docs for the formula).
    pub fn estimate_tokens(req: Request<'_>) -> CoreResult<u64> {
        check_request(req)?;
        let per_turn = req
            .turns
            .iter()
            .map(|t| scan(t.content, None, None).estimate_tokens())
            .sum();
        Ok(request_tokens(req, per_turn))
    }
}

fn check_request(req: Request<'_>) -> CoreResult<()> {
    if req.turns.is_empty() {
        return Err(CoreError::Shape(
            "messages is empty: a request needs at least one message".into(),
        ));
    }
    Ok(())
}

/// Index of the last user message, else of the last message.
fn last_user_index(turns: &[Turn<'_>]) -> usize {
    turns
        .iter()
        .rposition(|t| t.role == Role::User)
        .unwrap_or(turns.len().saturating_sub(1))
}

/// The request's token estimate from the sum of its per-turn estimates.
fn request_tokens(req: Request<'_>, per_turn: u64) -> u64 {
    if req.bare {
        per_turn
    } else {
        per_turn + TEMPLATE_TOKENS_PER_MESSAGE * req.turns.len() as u64
    }
}

fn add_stats(acc: &mut TextStats, s: &TextStats) {
    acc.chars += s.chars;
    acc.non_ws += s.non_ws;
    acc.digits += s.digits;
    acc.math += s.math;
    acc.questions += s.questions;
    acc.fences += s.fences;
    acc.newlines += s.newlines;
    acc.non_ascii += s.non_ascii;
    acc.tokens += s.tokens;
}

/// `log2(1 + v)`, piecewise linear between powers of two (exact at them). Built from integer
/// and correctly rounded IEEE operations only, unlike libm's `ln`, so the features are
/// bit-identical on every platform.
#[inline]
fn plog2_1p(v: u64) -> f64 {
    let x = v.saturating_add(1);
    let e = 63 - x.leading_zeros();
    let base = 1u64 << e;
    e as f64 + (x - base) as f64 / base as f64
}

#[inline]
fn log_cap(v: u64, cap: u64) -> f64 {
    (plog2_1p(v) / plog2_1p(cap)).min(1.0)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

fn scale_to_unit(v: &mut [f64]) {
    let n = norm(v);
    if n > 0.0 && n.is_finite() {
        for a in v.iter_mut() {
            *a /= n;
        }
    }
}

#[cfg(test)]
mod tests;
