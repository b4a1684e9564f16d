//! Linearizability of one object's history: the Wing–Gong search with Lowe's memoization
//! (the approach of Porcupine), over any sequential [`Model`]. Pure: no I/O, no clock.
//!
//! The history is a list of call and return entries in time order. The search walks it,
//! tries to linearize each pending call (apply it to the model state and remove its call
//! and return from the list); a return entry reached before its call was linearized is a
//! dead end, so it backtracks. A (set of linearized ops, model state) pair already seen is
//! never explored twice (Lowe's memoization), which is what makes real histories tractable.
//!
//! An operation with an unknown outcome has its return at infinity: it may be linearized
//! anywhere after its call, and linearizing it after every other op is the same as it
//! never happening.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    fn init(&self) -> Self::State;

    /// The state after `input` observed `output` in `state`, or `None` when a sequential
    /// object could not have produced that output there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One operation of the history under check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<I, O> {
    /// Caller's identifier (reported back in failures).
    pub id: usize,
    pub call: u64,
    /// `None`: unknown outcome (may take effect any time after `call`, or never).
    pub ret: Option<u64>,
    pub input: I,
    pub output: O,
}

/// Where the search proved the history impossible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The operation whose completion no linearization gets past: the history up to its
    /// return is the shortest non-linearizable prefix.
    pub culprit: usize,
    /// How many operations the deepest partial linearization placed.
    pub deepest: usize,
}

/// The verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid(Failure),
    /// The search hit its budget before deciding: never read this as valid.
    Unknown {
        steps: u64,
    },
}

const NIL: usize = usize::MAX;

/// Checks `history` against `model`, exploring at most `budget` search steps.
pub fn check<M: Model>(model: &M, history: &[Entry<M::Input, M::Output>], budget: u64) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Valid;
    }
    // Node 0 is the head sentinel; op i has call node 1+2i and return node 2+2i.
    let call_node = |i: usize| 1 + 2 * i;
    let ret_node = |i: usize| 2 + 2 * i;
    let op_of = |node: usize| (node - 1) / 2;
    let is_call = |node: usize| node % 2 == 1;

    // Time order; at equal times calls come first, so ops touching at an instant count
    // as concurrent (the lenient, sound choice).
    let mut order: Vec<(u64, u8, usize, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in history.iter().enumerate() {
        order.push((e.call, 0, i, call_node(i)));
        order.push((e.ret.unwrap_or(u64::MAX), 1, i, ret_node(i)));
    }
    order.sort_unstable();
    let mut position = vec![0usize; 2 * n + 1];
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = 0usize;
    for (pos, &(_, _, _, node)) in order.iter().enumerate() {
        position[node] = pos + 1;
        next[last] = node;
        prev[node] = last;
        last = node;
    }

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut entry = next[0];
    let mut steps: u64 = 0;
    let mut deepest = 0usize;
    let mut culprit = (0usize, 0usize); // (position of the blocking return, op)

    while next[0] != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown { steps };
        }
        if is_call(entry) {
            let i = op_of(entry);
            let op = &history[i];
            let mut advanced = false;
            if let Some(new_state) = model.step(&state, &op.input, &op.output) {
                let mut new_linearized = linearized.clone();
                new_linearized[i / 64] |= 1 << (i % 64);
                let key = (new_linearized, new_state);
                if !cache.contains(&key) {
                    let (new_linearized, new_state) = key;
                    cache.insert((new_linearized.clone(), new_state.clone()));
                    calls.push((entry, state));
                    state = new_state;
                    linearized = new_linearized;
                    deepest = deepest.max(calls.len());
                    // Lift: unlink the call and its return.
                    let r = ret_node(i);
                    next[prev[entry]] = next[entry];
                    if next[entry] != NIL {
                        prev[next[entry]] = prev[entry];
                    }
                    next[prev[r]] = next[r];
                    if next[r] != NIL {
                        prev[next[r]] = prev[r];
                    }
                    entry = next[0];
                    advanced = true;
                }
            }
            if !advanced {
                entry = next[entry];
            }
        } else {
            // A return whose call is not linearized: this path is dead.
            if position[entry] > culprit.0 {
                culprit = (position[entry], op_of(entry));
            }
            let Some((top, top_state)) = calls.pop() else {
                return Verdict::Invalid(Failure {
                    culprit: history[culprit.1].id,
                    deepest,
                });
            };
            let i = op_of(top);
            state = top_state;
            linearized[i / 64] &= !(1 << (i % 64));
            // Unlift, in the reverse order of the lift.
            let r = ret_node(i);
            next[prev[r]] = r;
            if next[r] != NIL {
                prev[next[r]] = r;
            }
            next[prev[top]] = top;
            prev[next[top]] = top;
            entry = next[top];
        }
        if entry == NIL {
            // Only reachable when the list is empty (every op placed): the loop ends.
            entry = next[0];
        }
    }
    Verdict::Valid
}

#[cfg(test)]
pub(crate) mod brute {
    //! Exhaustive reference checker for small histories: tries every order of a subset of
    //! the ops (unknown-outcome ops may be left out) that respects real time.
    use super::*;

    pub fn check<M: Model>(model: &M, history: &[Entry<M::Input, M::Output>]) -> bool {
        let n = history.len();
        let mut used = vec![false; n];
        search(model, history, &mut used, model.init())
    }

    fn search<M: Model>(
        model: &M,
        h: &[Entry<M::Input, M::Output>],
        used: &mut Vec<bool>,
        state: M::State,
    ) -> bool {
        // Done when every known-outcome op is placed (unknown ones may never happen).
        if (0..h.len()).all(|i| used[i] || h[i].ret.is_none()) {
            return true;
        }
        for i in 0..h.len() {
            if used[i] {
                continue;
            }
            // i may go next only if no unplaced op finished before i was called.
            let blocked =
                (0..h.len()).any(|j| j != i && !used[j] && h[j].ret.is_some_and(|r| r < h[i].call));
            if blocked {
                continue;
            }
            if let Some(s) = model.step(&state, &h[i].input, &h[i].output) {
                used[i] = true;
                if search(model, h, used, s) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
}
