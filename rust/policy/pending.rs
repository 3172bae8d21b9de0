//! Decisions awaiting feedback: a bounded store with a TTL, duplicate detection, and its part of
//! the saved state.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::cost::Prediction;
use crate::error::{CoreError, CoreResult};
use crate::space::{ActionDef, Space};
use crate::state::{Reader, Writer};

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub x: Vec<f64>,
    pub action: ActionDef,
    pub psi: Vec<f64>,
    pub input_tokens: f64,
    pub prediction: Prediction,
    pub created_s: f64,
}

/// Bounded store of decisions awaiting feedback.
///
/// `map` holds the live decisions; `order` is their arrival order for expiry. Completing a
/// decision removes it from `map` only, leaving a stale id in `order`; expiry pops stale ids
/// from the front, and `compact` drops the rest once they outnumber the live ones, so `order`
/// stays within `2 * len + COMPACT_SLACK` however long an old decision stays pending.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingStore {
    pub(super) map: HashMap<u64, Pending>,
    pub(super) order: VecDeque<u64>,
    pub(super) done: HashSet<u64>,
    pub(super) done_order: VecDeque<u64>,
    pub capacity: usize,
    pub ttl_s: f64,
}

/// Stale ids `PendingStore::order` may hold beyond twice the live ones before a compaction.
pub const COMPACT_SLACK: usize = 64;

impl PendingStore {
    pub(super) fn new(capacity: usize, ttl_s: f64) -> Self {
        PendingStore {
            map: HashMap::new(),
            order: VecDeque::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            capacity,
            ttl_s,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether decision `id` is still waiting for feedback.
    pub fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    /// Entries of the internal bookkeeping (live, stale arrival-order and answered ids): what
    /// the store's memory is proportional to. For tests of its bound.
    pub fn bookkeeping_len(&self) -> usize {
        self.map.len() + self.order.len() + self.done.len() + self.done_order.len()
    }

    /// Drops stale ids from `order` once they outnumber the live ones (amortised O(1) per
    /// decision: each pass removes at least half of what it scans).
    pub(super) fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + COMPACT_SLACK {
            let map = &self.map;
            self.order.retain(|id| map.contains_key(id));
        }
    }

    pub(super) fn expire(&mut self, now_s: f64) {
        while let Some(&id) = self.order.front() {
            match self.map.get(&id) {
                None => {
                    self.order.pop_front();
                }
                Some(p) if now_s - p.created_s > self.ttl_s || self.map.len() > self.capacity => {
                    self.map.remove(&id);
                    self.order.pop_front();
                }
                Some(_) => break,
            }
        }
    }

    pub(super) fn insert(&mut self, id: u64, p: Pending, now_s: f64) {
        self.map.insert(id, p);
        self.order.push_back(id);
        self.expire(now_s);
        self.compact();
    }

    /// The decision `id` if it can take feedback at `now_s`. Changes nothing: a failed update
    /// must leave the store as it was (expiry is applied when an update succeeds).
    pub(super) fn get_live(&self, id: u64, next_id: u64, now_s: f64) -> CoreResult<&Pending> {
        if id >= next_id {
            return Err(CoreError::UnknownDecision(id));
        }
        if self.done.contains(&id) {
            return Err(CoreError::DuplicateUpdate(id));
        }
        match self.map.get(&id) {
            Some(p) if now_s - p.created_s <= self.ttl_s => Ok(p),
            _ => Err(CoreError::ExpiredDecision(id)),
        }
    }

    /// Marks `id` answered (remembered for duplicate detection up to `capacity` ids) and
    /// applies expiry at `now_s`.
    pub(super) fn complete(&mut self, id: u64, now_s: f64) -> Option<Pending> {
        let p = self.map.remove(&id)?;
        self.done.insert(id);
        self.done_order.push_back(id);
        while self.done_order.len() > self.capacity {
            if let Some(old) = self.done_order.pop_front() {
                self.done.remove(&old);
            }
        }
        self.expire(now_s);
        self.compact();
        Some(p)
    }

    /// The live decisions in arrival order, then the remembered answered ids: pending
    /// decisions survive a restart.
    pub(super) fn write(&self, w: &mut Writer) {
        let live: Vec<u64> = self
            .order
            .iter()
            .copied()
            .filter(|id| self.map.contains_key(id))
            .collect();
        w.usize(live.len());
        for id in live {
            if let Some(p) = self.map.get(&id) {
                w.u64(id);
                w.f64s(&p.x);
                w.u64(p.action.uid);
                w.usize(p.action.model);
                w.u8(p.action.strategy.0);
                w.u32(p.action.n);
                w.f64s(&p.psi);
                w.f64(p.input_tokens);
                let pr = p.prediction;
                for v in [
                    pr.output_tokens_per_sample,
                    pr.samples,
                    pr.rounds,
                    pr.cost_usd,
                    pr.latency_s,
                ] {
                    w.f64(v);
                }
                w.f64(p.created_s);
            }
        }
        w.usize(self.done_order.len());
        for &id in &self.done_order {
            w.u64(id);
        }
    }

    /// Reads what `write` wrote into a fresh store: `dim` request features and `psi_len`
    /// action features per decision, every id below `next_id`, every model and strategy in `space`.
    pub(super) fn read(
        r: &mut Reader,
        capacity: usize,
        ttl_s: f64,
        dim: usize,
        psi_len: usize,
        space: &Space,
        next_id: u64,
    ) -> CoreResult<Self> {
        let mut store = PendingStore::new(capacity.max(1), ttl_s);
        let n_pending = r.dim("n_pending", 1 << 32)?;
        for _ in 0..n_pending {
            let id = r.u64()?;
            let x = r.f64s("pending.x", dim)?;
            let uid = r.u64()?;
            let model = r.usize()?;
            let strategy = space.strategy_from_u8(r.u8()?)?;
            let n = r.u32()?;
            if model >= space.models.len() || n == 0 || id >= next_id {
                return Err(CoreError::State("pending decision is inconsistent".into()));
            }
            let psi = r.f64s("pending.psi", psi_len)?;
            let input_tokens = r.finite_f64("input_tokens")?;
            let prediction = Prediction {
                output_tokens_per_sample: r.finite_f64("pred")?,
                samples: r.finite_f64("pred")?,
                rounds: r.finite_f64("pred")?,
                cost_usd: r.finite_f64("pred")?,
                latency_s: r.finite_f64("pred")?,
            };
            let created_s = r.finite_f64("created_s")?;
            let previous = store.map.insert(
                id,
                Pending {
                    x,
                    action: ActionDef {
                        model,
                        strategy,
                        n,
                        uid,
                    },
                    psi,
                    input_tokens,
                    prediction,
                    created_s,
                },
            );
            if previous.is_some() {
                return Err(CoreError::State(format!(
                    "pending decision {id} is listed twice"
                )));
            }
            store.order.push_back(id);
        }
        let n_done = r.dim("n_done", 1 << 32)?;
        for _ in 0..n_done {
            let id = r.u64()?;
            if !store.done.insert(id) {
                return Err(CoreError::State(format!(
                    "answered decision {id} is listed twice"
                )));
            }
            store.done_order.push_back(id);
        }
        Ok(store)
    }
}
