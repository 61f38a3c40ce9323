//! The memory planner: every activation gets a liveness interval [first write, last read]
//! over the step order (aliases extend the interval of the value they alias), and buffers
//! are reused greedily: a value takes the smallest free buffer that fits, or, when none
//! fits, the largest free buffer grows to its size (a buffer is free once its occupant's
//! last read comes strictly before this value's first write); only with no free buffer does
//! it get a new one. Two values whose
//! intervals overlap never share a buffer, so no live tensor is ever overwritten.

use super::lower::{Plan, ValueId, ValueKind};

/// A buffer of the plan and the activations placed in it.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Size: that of its largest occupant.
    pub bytes: u64,
    /// The activations placed in it, in order of first write.
    pub values: Vec<ValueId>,
}

/// Where every activation lives: the output of [`plan_memory`].
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// For each value: its slot, if it is a planned activation (aliases resolve to their root's).
    pub slot_of: Vec<Option<usize>>,
    /// The buffers to allocate, in order of first use.
    pub slots: Vec<Slot>,
    /// Liveness interval (first write, last read) per planned root value.
    pub interval: Vec<Option<(usize, usize)>>,
}

impl MemoryPlan {
    /// Bytes of all slots: what the plan allocates for activations.
    pub fn planned_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.bytes).sum()
    }
}

/// Bytes of one activation (whole 32-bit words, at least one).
fn bytes(plan: &Plan, v: ValueId) -> u64 {
    let value = &plan.values[v.0];
    value.dtype.bytes(value.len()).max(4)
}

/// Sum of every activation's bytes: what a planner without reuse would allocate.
pub fn naive_bytes(plan: &Plan) -> u64 {
    (0..plan.values.len())
        .map(ValueId)
        .filter(|v| plan.values[v.0].kind == ValueKind::Activation)
        .map(|v| bytes(plan, v))
        .sum()
}

/// Places every activation of `plan` (see the module docs). Deterministic: the same plan
/// gives the same placement.
pub fn plan_memory(plan: &Plan) -> MemoryPlan {
    let n = plan.values.len();
    let mut interval: Vec<Option<(usize, usize)>> = vec![None; n];
    let mut read = vec![false; n];
    for (s, step) in plan.steps.iter().enumerate() {
        let (reads, writes) = step.io();
        let reads: Vec<_> = reads.into_iter().map(|v| (v, true)).collect();
        for (v, is_read) in reads.into_iter().chain(writes.into_iter().map(|v| (v, false))) {
            let root = plan.root(v);
            if plan.values[root.0].kind != ValueKind::Activation {
                continue;
            }
            read[root.0] |= is_read;
            let e = interval[root.0].get_or_insert((s, s));
            e.0 = e.0.min(s);
            e.1 = e.1.max(s);
        }
    }
    // A value no step reads is an output the host will read (eval probabilities): it lives
    // to the end, and so does every value the plan keeps for the host.
    for v in plan.keep.iter().map(|&k| plan.root(k).0) {
        read[v] = false;
    }
    for v in 0..n {
        if let (Some(i), false) = (&mut interval[v], read[v]) {
            i.1 = plan.steps.len();
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&v| interval[v].is_some()).collect();
    order.sort_by_key(|&v| interval[v].map(|i| i.0));
    let mut slots: Vec<Slot> = Vec::new();
    let mut free_after: Vec<usize> = Vec::new(); // last step that reads the slot's current occupant
    let mut slot_of = vec![None; n];
    for v in order {
        let (start, end) = interval[v].expect("planned value");
        let need = bytes(plan, ValueId(v));
        let free: Vec<usize> = (0..slots.len()).filter(|&s| free_after[s] < start).collect();
        let fits = free.iter().copied().filter(|&s| slots[s].bytes >= need).min_by_key(|&s| slots[s].bytes);
        // none fits: the largest free buffer grows (by less than a new buffer would take)
        let grown = || free.iter().copied().max_by_key(|&s| (slots[s].bytes, std::cmp::Reverse(s)));
        let s = match fits.or_else(grown) {
            Some(s) => {
                slots[s].bytes = slots[s].bytes.max(need);
                s
            }
            None => {
                slots.push(Slot { bytes: need, values: Vec::new() });
                free_after.push(0);
                slots.len() - 1
            }
        };
        slots[s].values.push(ValueId(v));
        free_after[s] = end;
        slot_of[v] = Some(s);
    }
    for v in 0..n {
        let root = plan.root(ValueId(v));
        if root.0 != v {
            slot_of[v] = slot_of[root.0];
        }
    }
    MemoryPlan { slot_of, slots, interval }
}
