//! Multi-replica merging: a policy's additive statistics as one flat float64 vector.
//!
//! What a replica learns is a sum over the outcomes it saw: the quality learner's `A - ridge I`
//! and `b` (per arm for the disjoint learner, one joint model for the shared one) and update
//! counts, the interaction prior's evidence sums (`yy`, `n`), and the cost model's regressions
//! (data `sum f f'`, `sum y f`, count per (model, strategy) and per model; their priors live in
//! the regressions, re-derived from the `ModelSpec`s), adaptive-sample sums, pooled log-ratio
//! statistics (count, sum, sum of squares per (model, strategy) and per model) and per-action
//! outcome counts. The *evidence vector* of a policy is all of these minus the prior, in one fixed order
//! (the layout), so that the evidence of two replicas adds element by element and a policy
//! rebuilt from `prior + sum of evidence vectors` equals one policy that saw every outcome, up
//! to the reordering of float64 sums (about 1e-15 relative per entry; tests use 1e-12).
//!
//! Not merged, by design: pending decisions, the pacer's spend, conservative mode's account, the
//! random stream and decision ids stay local to the replica (they describe what *it* did, not
//! what the world is like). The interaction prior's multiplier is a hyperparameter: it is not
//! summed but re-estimated from the merged `A`, `b`, `yy`, `n` on the replica's own schedule.
//! Not mergeable at all: a learner discount below 1 (a sum discounted per update depends on
//! when each outcome arrived at which replica, so slot sums are not order-independent);
//! `sync_export` refuses it with `ConfigError`. Discounting across replicas is done on the
//! evidence instead, by epochs (`uniscale.sync`): every entry but the counts
//! (`sync_count_mask`) is scaled at epoch boundaries, and blobs carry their epoch.
//!
//! The layout is guarded by a fingerprint (FNV-1a 64 of the action space with its models,
//! prices and priors, the request dimension, learner kind and configuration, interaction scale,
//! feature version, the layout length and [`SYNC_FORMAT_VERSION`]): a blob of another
//! fingerprint must not be added. Blob: `b"USSYNC\0\0"`, format version (u32), epoch (u32),
//! fingerprint (u64), value count (u64), the values (f64), CRC-32 of everything before it; all
//! little endian.

use crate::cost::{CostModel, LogStat, Ridge as CostRidge};
use crate::error::{CoreError, CoreResult};
use crate::learner::{Config, Learner};
use crate::linalg;
use crate::linucb::LinUcb;
use crate::ridge::{Ridge, MAGNITUDE_LIMIT};
use crate::shared::SharedLinUcb;
use crate::space::Space;
use crate::state::{Kind, Writer};

use super::persist::{write_custom_strategies, write_space};
use super::{Policy, QualityLearner};

/// Version of the evidence layout and blob format.
pub const SYNC_FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"USSYNC\0\0";
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8;
/// Counts are carried as f64: exact below 2^53.
const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

/// The shape of a quality learner without its statistics: what a rebuild allocates afresh.
#[derive(Debug, Clone)]
enum Skeleton {
    Shared {
        psi: Vec<f64>,
        k: usize,
        p: usize,
        dim: usize,
        cfg: Config,
        mean_mult: f64,
    },
    Disjoint {
        k: usize,
        dim: usize,
        cfg: Config,
    },
}

/// What rebuilding needs from a policy (the learner's shape, the cost model and the action
/// space), copied under the policy's lock in O(K p + models) so that the O(D^2) allocation and
/// the O(D^3) rebuild run without it.
#[derive(Debug, Clone)]
pub struct SyncBase {
    skeleton: Skeleton,
    cost: CostModel,
    space: Space,
    fingerprint: u64,
    len: usize,
}

/// The statistics a merge replaces, rebuilt from an evidence vector (inverses included), ready
/// to be swapped into a policy of the same fingerprint.
#[derive(Debug, Clone)]
pub struct SyncParts {
    learner: QualityLearner,
    cost: CostModel,
    yy: f64,
    n: f64,
    fingerprint: u64,
    evidence: Vec<f64>,
}

impl SyncParts {
    /// The evidence vector of the rebuilt statistics (what `sync_export` returns once they
    /// are swapped in), computed without the policy's lock.
    pub fn evidence(&self) -> &[f64] {
        &self.evidence
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn tri_len(n: usize) -> usize {
    n * (n + 1) / 2
}

/// Appends the upper triangle (diagonal included) of `a - prior * I`.
fn push_upper(out: &mut Vec<f64>, a: &[f64], n: usize, prior: f64) {
    for i in 0..n {
        for j in i..n {
            let v = a[i * n + j];
            out.push(if i == j { v - prior } else { v });
        }
    }
}

/// Reads values from an evidence vector in layout order.
struct Cursor<'a> {
    v: &'a [f64],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, k: usize) -> CoreResult<&'a [f64]> {
        let s = self
            .v
            .get(self.at..self.at + k)
            .ok_or_else(|| CoreError::State("evidence vector too short".into()))?;
        self.at += k;
        Ok(s)
    }

    /// A full symmetric `prior * I + upper` matrix.
    fn matrix(&mut self, n: usize, prior: f64) -> CoreResult<Vec<f64>> {
        let u = self.take(tri_len(n))?;
        let mut a = linalg::try_filled(n * n, 0.0)?;
        let mut k = 0;
        for i in 0..n {
            for j in i..n {
                let v = if i == j { u[k] + prior } else { u[k] };
                a[i * n + j] = v;
                a[j * n + i] = v;
                k += 1;
            }
        }
        Ok(a)
    }

    fn count(&mut self, what: &str) -> CoreResult<u64> {
        let c = self.take(1)?[0];
        if !(0.0..=MAX_COUNT).contains(&c) {
            return Err(CoreError::State(format!(
                "{what} count {c} is not a count in [0, 2^53]"
            )));
        }
        Ok(c.round() as u64)
    }
}

/// The ridge models of a learner, in layout order, with their prior ridge.
fn ridges(l: &QualityLearner) -> Vec<&Ridge> {
    match l {
        QualityLearner::Shared(s) => vec![&s.model],
        QualityLearner::Disjoint(d) => d.arms.iter().collect(),
    }
}

fn adaptive_uids(space: &Space) -> Vec<u64> {
    space
        .actions
        .iter()
        .filter(|a| space.is_adaptive(a.strategy))
        .map(|a| a.uid)
        .collect()
}

/// The cost model a fresh policy over `space` starts from (what the evidence is relative to).
fn cost_prior(space: &Space) -> CostModel {
    let mut c = CostModel::new(&space.strategies);
    for m in &space.models {
        c.add_model(m);
    }
    c
}

/// A cost-model regression's data statistics (the prior lives in the regression itself, not in
/// its `A` and `b`): upper triangle of `sum f f'`, `sum y f`, count.
fn push_rls(out: &mut Vec<f64>, r: &CostRidge) {
    push_upper(out, &r.a, r.b.len(), 0.0);
    out.extend_from_slice(&r.b);
    out.push(r.count as f64);
}

fn read_rls(c: &mut Cursor, prior: &CostRidge) -> CoreResult<CostRidge> {
    let n = prior.b.len();
    let a = c.matrix(n, 0.0)?;
    let b = c.take(n)?.to_vec();
    let count = c.count("cost model")?;
    prior
        .with_data(count, a, b)
        .map_err(|e| CoreError::State(format!("merged cost model regression: {e}")))
}

/// The pooled cost statistics: (count, sum, sum of squares) of the log ratios per (model,
/// strategy) and per model, then the outcome count of every action in the space's order.
fn push_pooled(out: &mut Vec<f64>, cost: &CostModel, space: &Space) {
    for g in cost.out_log.iter().chain(&cost.latency_log) {
        out.extend([g.count, g.sum, g.sum_sq]);
    }
    for a in &space.actions {
        out.push(cost.action_observations(a.uid) as f64);
    }
}

fn read_pooled(c: &mut Cursor, cost: &mut CostModel, space: &Space) -> CoreResult<()> {
    let mut read = |k: usize| -> CoreResult<Vec<LogStat>> {
        let mut v = Vec::with_capacity(k);
        for _ in 0..k {
            let g = c.take(3)?;
            if g[0] < 0.0 || g[2] < 0.0 {
                return Err(CoreError::State(
                    "negative pooled cost-model statistics".into(),
                ));
            }
            v.push(LogStat {
                count: g[0],
                sum: g[1],
                sum_sq: g[2],
            });
        }
        Ok(v)
    };
    let out_log = read(cost.out_log.len())?;
    let latency_log = read(cost.latency_log.len())?;
    let mut obs: Vec<(u64, u64)> = Vec::with_capacity(space.actions.len());
    for a in &space.actions {
        let n = c.count("action observation")?;
        if n > 0 {
            obs.push((a.uid, n));
        }
    }
    obs.sort_unstable();
    cost.set_pooled_stats(out_log, latency_log, obs)
        .map_err(CoreError::State)
}

impl Policy {
    /// Fails with `Config` naming the reason when this policy's statistics cannot be merged.
    pub fn check_mergeable(&self) -> CoreResult<()> {
        let c = self.learner.as_learner().config();
        if c.discount < 1.0 {
            return Err(CoreError::Config(format!(
                "a policy with discount {} < 1 cannot be merged across replicas: a discounted \
                 sum depends on when each outcome reached which replica, so the replicas' sums \
                 do not add up to one policy's (use discount = 1 with sync)",
                c.discount
            )));
        }
        Ok(())
    }

    /// Length of the evidence vector.
    pub fn sync_len(&self) -> usize {
        layout_len(&self.learner, &self.space)
    }

    /// Identifies the layout and meaning of the evidence vector (see the module docs).
    pub fn sync_fingerprint(&self) -> u64 {
        let mut w = Writer::new();
        w.u32(SYNC_FORMAT_VERSION);
        write_space(&self.space, &mut w);
        write_custom_strategies(&self.space, &mut w);
        w.usize(self.dim);
        w.str(self.learner.kind());
        let c: &Config = self.learner.as_learner().config();
        // alpha only scales the bonus and is not part of the statistics
        w.f64(c.ridge);
        w.f64(c.discount);
        w.f64(c.prior_mean);
        w.f64(self.cfg.interaction_scale);
        w.str(&self.cfg.feature_version);
        w.usize(self.sync_len());
        fnv1a(&w.finish(Kind::Policy))
    }

    /// The policy's evidence vector: its additive statistics minus the prior.
    pub fn sync_export(&self) -> CoreResult<Vec<f64>> {
        self.check_mergeable()?;
        let ip = &self.cfg.interaction_prior;
        evidence_of(&self.learner, &self.cost, &self.space, ip.yy, ip.n)
    }

    /// The quality learner's update count (summed over arms), O(K).
    pub fn sync_update_count(&self) -> u64 {
        self.learner.as_learner().n_updates()
    }

    /// Which entries of the evidence vector are integer counts of observations (learner
    /// updates, cost-model observation counts): an epoch discount scales every other entry and
    /// leaves these.
    pub fn sync_count_mask(&self) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.sync_len());
        for r in ridges(&self.learner) {
            out.extend(std::iter::repeat_n(false, tri_len(r.n) + r.n));
            out.push(true);
        }
        out.extend([false, false]);
        for r in self.cost.out_tokens.iter().chain(&self.cost.latency) {
            let n = r.b.len();
            out.extend(std::iter::repeat_n(false, tri_len(n) + n));
            out.push(true);
        }
        out.extend(std::iter::repeat_n(
            false,
            2 * adaptive_uids(&self.space).len(),
        ));
        // the log-ratio statistics decay as a whole (count included, so their means keep their
        // meaning); the per-action outcome counts are counts
        out.extend(std::iter::repeat_n(false, 3 * 5 * self.space.models.len()));
        out.extend(std::iter::repeat_n(true, self.space.actions.len()));
        out
    }

    /// Every count the evidence carries (learner updates, cost-model observations, adaptive
    /// and interaction-prior counts), O(K + models): every learning path that changes the
    /// statistics increments one of them, so equal counts mean equal statistics. What a merge
    /// checks, under the lock, to know that no local update raced its rebuild.
    pub fn sync_counts(&self) -> Vec<u64> {
        let mut out: Vec<u64> = ridges(&self.learner).iter().map(|r| r.n_updates).collect();
        out.extend(self.cost.out_tokens.iter().map(|r| r.count));
        out.extend(self.cost.latency.iter().map(|r| r.count));
        out.extend(self.cost.adaptive_samples.iter().map(|e| e.2.to_bits()));
        out.extend(self.cost.action_obs.iter().map(|e| e.1));
        out.push(self.cfg.interaction_prior.n.to_bits());
        out
    }

    /// A copy of what [`SyncBase::rebuild`] needs (no matrices); refuses unmergeable policies.
    pub fn sync_base(&self) -> CoreResult<SyncBase> {
        self.check_mergeable()?;
        let skeleton = match &self.learner {
            QualityLearner::Shared(l) => Skeleton::Shared {
                psi: l.psi.clone(),
                k: l.k,
                p: l.p,
                dim: l.dim,
                cfg: l.cfg,
                mean_mult: l.mean_mult,
            },
            QualityLearner::Disjoint(l) => Skeleton::Disjoint {
                k: l.arms.len(),
                dim: l.dim,
                cfg: l.cfg,
            },
        };
        Ok(SyncBase {
            skeleton,
            cost: self.cost.clone(),
            space: self.space.clone(),
            fingerprint: self.sync_fingerprint(),
            len: self.sync_len(),
        })
    }

    /// `self.sync_base()?.rebuild(evidence)`: see [`SyncBase::rebuild`].
    pub fn sync_rebuild(&self, evidence: &[f64]) -> CoreResult<SyncParts> {
        self.sync_base()?.rebuild(evidence)
    }

    /// Puts rebuilt statistics in place (O(1) moves). Everything local (pending decisions,
    /// pacer, conservative account, random stream, interaction multiplier) is kept.
    pub fn sync_swap(&mut self, parts: SyncParts) -> CoreResult<()> {
        if parts.fingerprint != self.sync_fingerprint() {
            return Err(CoreError::Config(
                "the policy's action space or configuration changed while merging".into(),
            ));
        }
        self.learner = parts.learner;
        self.cost = parts.cost;
        self.cfg.interaction_prior.yy = parts.yy;
        self.cfg.interaction_prior.n = parts.n;
        Ok(())
    }
}

impl SyncBase {
    /// Rebuilds the mergeable statistics (and their inverses, O(D^3)) from an evidence vector:
    /// `prior + evidence`. Runs without the policy's lock. Fails with `State` on a vector that is short, non-finite, out of range or
    /// not positive definite once the prior is added; the policy is never changed.
    pub fn rebuild(&self, evidence: &[f64]) -> CoreResult<SyncParts> {
        if evidence.len() != self.len {
            return Err(CoreError::State(format!(
                "evidence vector has {} values, this policy's layout {}",
                evidence.len(),
                self.len
            )));
        }
        if let Some(i) = evidence
            .iter()
            .position(|v| !(v.is_finite() && v.abs() <= MAGNITUDE_LIMIT))
        {
            return Err(CoreError::State(format!(
                "evidence value {i} = {} is not finite or beyond {MAGNITUDE_LIMIT:e}",
                evidence[i]
            )));
        }
        let mut c = Cursor { v: evidence, at: 0 };
        let learner = match &self.skeleton {
            Skeleton::Shared {
                psi,
                k,
                p,
                dim,
                cfg,
                mean_mult,
            } => {
                let mut s = SharedLinUcb::new(psi.clone(), *k, *p, *dim, *cfg).map_err(state)?;
                let n = s.model.n;
                let a = c.matrix(n, cfg.ridge)?;
                let b = c.take(n)?.to_vec();
                let cnt = c.count("learner update")?;
                s.model = Ridge::from_stats(n, a, b, cnt).map_err(state)?;
                s.set_mean_mult(*mean_mult).map_err(state)?;
                QualityLearner::Shared(s)
            }
            Skeleton::Disjoint { k, dim, cfg } => {
                let mut d = LinUcb::new(*k, *dim, *cfg).map_err(state)?;
                for key in 0..*k {
                    let a = c.matrix(*dim, cfg.ridge)?;
                    let b = c.take(*dim)?.to_vec();
                    let cnt = c.count("learner update")?;
                    let r = Ridge::from_stats(*dim, a, b, cnt).map_err(state)?;
                    d.restore_ridge(key, r);
                }
                QualityLearner::Disjoint(d)
            }
        };
        let yy = c.take(1)?[0];
        let n = c.take(1)?[0];
        if yy < 0.0 || n < 0.0 {
            return Err(CoreError::State(
                "negative interaction-prior evidence".into(),
            ));
        }
        let prior = cost_prior(&self.space);
        let mut cost = self.cost.clone();
        for (i, p) in prior.out_tokens.iter().enumerate() {
            cost.out_tokens[i] = read_rls(&mut c, p)?;
        }
        for (i, p) in prior.latency.iter().enumerate() {
            cost.latency[i] = read_rls(&mut c, p)?;
        }
        for uid in adaptive_uids(&self.space) {
            let v = c.take(2)?;
            if v[0] < 0.0 || v[1] < 0.0 {
                return Err(CoreError::State("negative adaptive-sample evidence".into()));
            }
            match cost.adaptive_samples.binary_search_by_key(&uid, |e| e.0) {
                Ok(i) => cost.adaptive_samples[i] = (uid, v[0], v[1]),
                Err(i) => cost.adaptive_samples.insert(i, (uid, v[0], v[1])),
            }
        }
        read_pooled(&mut c, &mut cost, &self.space)?;
        if c.at != evidence.len() {
            return Err(CoreError::State("evidence vector too long".into()));
        }
        let evidence = evidence_of(&learner, &cost, &self.space, yy, n)?;
        Ok(SyncParts {
            learner,
            cost,
            yy,
            n,
            fingerprint: self.fingerprint,
            evidence,
        })
    }
}

/// The evidence vector of these statistics (see [`Policy::sync_export`]).
fn evidence_of(
    learner: &QualityLearner,
    cost: &CostModel,
    space: &Space,
    yy: f64,
    n: f64,
) -> CoreResult<Vec<f64>> {
    let ridge = learner.as_learner().config().ridge;
    let mut out = Vec::new();
    out.try_reserve_exact(layout_len(learner, space))
        .map_err(|e| CoreError::Memory(e.to_string()))?;
    for r in ridges(learner) {
        push_upper(&mut out, &r.a, r.n, ridge);
        out.extend_from_slice(&r.b);
        out.push(r.n_updates as f64);
    }
    out.push(yy);
    out.push(n);
    for r in cost.out_tokens.iter().chain(&cost.latency) {
        push_rls(&mut out, r);
    }
    for uid in adaptive_uids(space) {
        let (s, c) = match cost.adaptive_samples.binary_search_by_key(&uid, |e| e.0) {
            Ok(i) => (cost.adaptive_samples[i].1, cost.adaptive_samples[i].2),
            Err(_) => (0.0, 0.0),
        };
        out.push(s);
        out.push(c);
    }
    push_pooled(&mut out, cost, space);
    Ok(out)
}

fn layout_len(learner: &QualityLearner, space: &Space) -> usize {
    let rl: usize = ridges(learner).iter().map(|r| tri_len(r.n) + r.n + 1).sum();
    let m = space.models.len();
    rl + 2
        + space.strategies.len() * m * (3 + 2 + 1)
        + m * (6 + 3 + 1)
        + 2 * adaptive_uids(space).len()
        + 3 * 5 * m
        + space.actions.len()
}

fn state(e: CoreError) -> CoreError {
    match e {
        CoreError::Memory(_) | CoreError::State(_) => e,
        e => CoreError::State(format!("merged statistics: {e}")),
    }
}

/// One evidence vector as a blob (see the module docs for the layout), stamped with the
/// discount epoch its values are expressed in (0 without epoch discounting).
pub fn encode_blob(fingerprint: u64, epoch: u32, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8 * values.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SYNC_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// `(fingerprint, epoch, values)` from a blob. Truncated, corrupt or foreign bytes and another
/// format version are `State` errors; the values are checked finite. The caller compares the
/// fingerprint with its own.
pub fn decode_blob(bytes: &[u8]) -> CoreResult<(u64, u32, Vec<f64>)> {
    let bad = |m: String| CoreError::State(format!("sync blob: {m}"));
    if bytes.len() < HEADER_LEN + 4 {
        return Err(bad(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(bad("not a UniScale sync blob (bad magic)".into()));
    }
    let mut v4 = [0u8; 4];
    v4.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(v4);
    if version != SYNC_FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads {SYNC_FORMAT_VERSION}"
        )));
    }
    v4.copy_from_slice(&bytes[12..16]);
    let epoch = u32::from_le_bytes(v4);
    let fingerprint = le_u64(&bytes[16..24]);
    let n = le_u64(&bytes[24..32]);
    let body = (bytes.len() - HEADER_LEN - 4) as u64;
    if n.checked_mul(8) != Some(body) {
        return Err(bad(format!(
            "header announces {n} values, the blob holds {} bytes of them",
            body
        )));
    }
    let end = bytes.len() - 4;
    v4.copy_from_slice(&bytes[end..]);
    if crc32fast::hash(&bytes[..end]) != u32::from_le_bytes(v4) {
        return Err(bad("CRC mismatch (corrupt or truncated)".into()));
    }
    let values: Vec<f64> = bytes[HEADER_LEN..end]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("value {i} is not finite")));
    }
    Ok((fingerprint, epoch, values))
}
