use proptest::prelude::*;

use super::*;
use crate::checker::linearizable::brute;

const BUDGET: u64 = 5_000_000;

fn e(id: usize, call: u64, ret: Option<u64>, input: Input, output: Output) -> Entry<Input, Output> {
    Entry {
        id,
        call,
        ret,
        input,
        output,
    }
}

fn verdict(h: &[Entry<Input, Output>]) -> Verdict {
    linearizable::check(&Register, h, BUDGET)
}

#[test]
fn sequential_write_then_read_is_valid() {
    let h = [
        e(0, 0, Some(1), Input::Write(1), Output::Done),
        e(1, 2, Some(3), Input::Read, Output::Read(Some(1))),
    ];
    assert_eq!(verdict(&h), Verdict::Valid);
}

#[test]
fn read_of_an_overwritten_value_after_the_overwrite_completed_is_invalid() {
    let h = [
        e(0, 0, Some(1), Input::Write(1), Output::Done),
        e(1, 2, Some(3), Input::Write(2), Output::Done),
        e(2, 4, Some(5), Input::Read, Output::Read(Some(1))),
    ];
    match verdict(&h) {
        Verdict::Invalid(f) => assert_eq!(f.culprit, 2),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in [Some(1), Some(2)] {
        let h = [
            e(0, 0, Some(1), Input::Write(1), Output::Done),
            e(1, 2, Some(6), Input::Write(2), Output::Done),
            e(2, 3, Some(5), Input::Read, Output::Read(seen)),
        ];
        assert_eq!(verdict(&h), Verdict::Valid, "seen {seen:?}");
    }
}

#[test]
fn an_unknown_write_may_take_effect_late_or_never() {
    let unknown = e(0, 0, None, Input::Write(7), Output::Unknown);
    let late = [
        unknown.clone(),
        e(1, 10, Some(11), Input::Read, Output::Read(None)),
        e(2, 20, Some(21), Input::Read, Output::Read(Some(7))),
    ];
    assert_eq!(verdict(&late), Verdict::Valid);
    let never = [unknown, e(1, 10, Some(11), Input::Read, Output::Read(None))];
    assert_eq!(verdict(&never), Verdict::Valid);
}

#[test]
fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
    let h = [
        e(0, 0, Some(1), Input::Read, Output::Read(Some(7))),
        e(1, 5, None, Input::Write(7), Output::Unknown),
    ];
    assert!(matches!(verdict(&h), Verdict::Invalid(_)));
}

#[test]
fn a_successful_cas_needs_its_expected_value() {
    let ok = [
        e(0, 0, Some(1), Input::Write(1), Output::Done),
        e(1, 2, Some(3), Input::Cas { from: 1, to: 2 }, Output::Done),
        e(2, 4, Some(5), Input::Read, Output::Read(Some(2))),
    ];
    assert_eq!(verdict(&ok), Verdict::Valid);
    let bad = [
        e(0, 0, Some(1), Input::Write(1), Output::Done),
        e(1, 2, Some(3), Input::Cas { from: 9, to: 2 }, Output::Done),
    ];
    assert!(matches!(verdict(&bad), Verdict::Invalid(_)));
}

#[test]
fn a_search_over_budget_is_unknown_not_valid() {
    let h: Vec<_> = (0..12)
        .map(|i| e(i, 0, Some(100), Input::Write(i as u64), Output::Done))
        .chain([e(99, 101, Some(102), Input::Read, Output::Read(Some(3)))])
        .collect();
    assert!(matches!(
        linearizable::check(&Register, &h, 3),
        Verdict::Unknown { .. }
    ));
}

fn op(id: usize, call: u64, ret: u64, outcome: Outcome, o: Op) -> Operation {
    Operation {
        id,
        process: id as u64,
        client: 0,
        call,
        ret,
        outcome,
        op: o,
        error: None,
    }
}

#[test]
fn check_reports_a_window_around_the_stale_read_per_key() {
    let k = |s: &str| s.to_string();
    let ops = vec![
        op(
            0,
            0,
            1,
            Outcome::Ok,
            Op::Write {
                key: k("a"),
                value: 1,
            },
        ),
        op(
            1,
            2,
            3,
            Outcome::Ok,
            Op::Write {
                key: k("a"),
                value: 2,
            },
        ),
        op(
            2,
            2,
            3,
            Outcome::Fail,
            Op::Write {
                key: k("a"),
                value: 3,
            },
        ),
        op(
            3,
            4,
            5,
            Outcome::Ok,
            Op::Read {
                key: k("a"),
                value: Some(1),
            },
        ),
        op(
            4,
            0,
            9,
            Outcome::Ok,
            Op::Read {
                key: k("b"),
                value: None,
            },
        ),
    ];
    let verdicts = check(&ops, BUDGET);
    assert_eq!(verdicts["b"], KeyVerdict::Valid);
    let KeyVerdict::Invalid { window } = &verdicts["a"] else {
        panic!("key a should be invalid: {verdicts:?}");
    };
    assert_eq!(window.culprit, 3);
    // The read, and the writes that completed before it; never the failed write.
    assert_eq!(window.ops, vec![0, 1, 3]);
    assert_eq!((window.start, window.end), (0, 5));
}

/// Simulates processes running ops against a real register, each op taking effect at one
/// instant between its call and return; `choices` drives every decision.
fn simulate(processes: usize, choices: &[u32]) -> Vec<Entry<Input, Output>> {
    struct Pending {
        id: usize,
        call: u64,
        input: Input,
        output: Option<Output>,
    }
    let mut procs: Vec<Option<Pending>> = (0..processes).map(|_| None).collect();
    let mut state: Option<u64> = None;
    let mut written: Vec<u64> = Vec::new();
    let mut next_value = 1u64;
    let mut out = Vec::new();
    let mut id = 0;
    for (t, &c) in choices.iter().enumerate() {
        let t = t as u64;
        let p = c as usize % processes;
        let roll = (c >> 20) % 8;
        match procs[p].take() {
            None => {
                let input = match (c >> 8) % 3 {
                    0 => Input::Read,
                    1 => {
                        next_value += 1;
                        Input::Write(next_value)
                    }
                    _ => {
                        next_value += 1;
                        let from = if written.is_empty() {
                            0
                        } else {
                            written[(c >> 12) as usize % written.len()]
                        };
                        Input::Cas {
                            from,
                            to: next_value,
                        }
                    }
                };
                procs[p] = Some(Pending {
                    id,
                    call: t,
                    input,
                    output: None,
                });
                id += 1;
            }
            Some(mut pending) if pending.output.is_none() => {
                if roll == 0 {
                    // Crashed before taking effect: unknown outcome, never happens.
                    if !matches!(pending.input, Input::Read) {
                        out.push(e(
                            pending.id,
                            pending.call,
                            None,
                            pending.input,
                            Output::Unknown,
                        ));
                    }
                    continue;
                }
                let output = match pending.input {
                    Input::Read => Output::Read(state),
                    Input::Write(v) => {
                        state = Some(v);
                        written.push(v);
                        Output::Done
                    }
                    Input::Cas { from, to } if state == Some(from) => {
                        state = Some(to);
                        written.push(to);
                        Output::Done
                    }
                    // Compare failed: a failed op, which the checker never sees.
                    Input::Cas { .. } => continue,
                };
                pending.output = Some(output);
                procs[p] = Some(pending);
            }
            Some(pending) => {
                let Some(output) = pending.output else {
                    continue;
                };
                if roll == 0 {
                    // Took effect, but the client never heard back.
                    if !matches!(pending.input, Input::Read) {
                        out.push(e(
                            pending.id,
                            pending.call,
                            None,
                            pending.input,
                            Output::Unknown,
                        ));
                    }
                } else {
                    out.push(e(pending.id, pending.call, Some(t), pending.input, output));
                }
            }
        }
    }
    // Whatever is still running has an unknown outcome.
    for pending in procs.into_iter().flatten() {
        if !matches!(pending.input, Input::Read) {
            out.push(e(
                pending.id,
                pending.call,
                None,
                pending.input,
                Output::Unknown,
            ));
        }
    }
    out
}

fn random_small_history(raw: &[(u8, u8, u8, u8, u8)]) -> Vec<Entry<Input, Output>> {
    raw.iter()
        .enumerate()
        .map(|(id, &(call, len, kind, a, b))| {
            let call = u64::from(call % 12);
            let ret = (b % 5 != 0).then_some(call + 1 + u64::from(len % 6));
            let (a, b2) = (u64::from(a % 3), u64::from(b % 3));
            let (input, output) = match kind % 3 {
                0 => (Input::Read, Output::Read((a > 0).then_some(a))),
                1 => (Input::Write(a + 1), Output::Done),
                _ => (
                    Input::Cas {
                        from: a + 1,
                        to: b2 + 1,
                    },
                    Output::Done,
                ),
            };
            let output = if ret.is_none() {
                Output::Unknown
            } else {
                output
            };
            e(id, call, ret, input, output)
        })
        .filter(|x| !(matches!(x.input, Input::Read) && x.ret.is_none()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn histories_of_a_real_register_are_linearizable(
        processes in 1usize..5,
        choices in proptest::collection::vec(any::<u32>(), 0..160),
    ) {
        let h = simulate(processes, &choices);
        prop_assert_eq!(verdict(&h), Verdict::Valid, "history: {:?}", h);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        processes in 1usize..5,
        choices in proptest::collection::vec(any::<u32>(), 10..160),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut h = simulate(processes, &choices);
        let reads: Vec<usize> = (0..h.len()).filter(|&i| matches!(h[i].output, Output::Read(_))).collect();
        prop_assume!(!reads.is_empty());
        let r = reads[pick.index(reads.len())];
        h[r].output = Output::Read(Some(u64::MAX));
        prop_assert!(matches!(verdict(&h), Verdict::Invalid(_)));
    }

    #[test]
    fn a_read_from_the_future_is_caught(
        processes in 1usize..5,
        choices in proptest::collection::vec(any::<u32>(), 10..160),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut h = simulate(processes, &choices);
        // (read, a value first written by an op called after that read returned)
        let mut pairs = Vec::new();
        for (ri, r) in h.iter().enumerate() {
            let (Output::Read(_), Some(ret)) = (&r.output, r.ret) else { continue };
            for w in &h {
                let v = match w.input {
                    Input::Write(v) | Input::Cas { to: v, .. } => v,
                    Input::Read => continue,
                };
                if w.call > ret {
                    pairs.push((ri, v));
                }
            }
        }
        prop_assume!(!pairs.is_empty());
        let (ri, v) = pairs[pick.index(pairs.len())];
        h[ri].output = Output::Read(Some(v));
        prop_assert!(matches!(verdict(&h), Verdict::Invalid(_)), "history: {h:?}");
    }

    #[test]
    fn search_agrees_with_brute_force_on_small_histories(
        raw in proptest::collection::vec(any::<(u8, u8, u8, u8, u8)>(), 0..7),
    ) {
        let h = random_small_history(&raw);
        let fast = verdict(&h);
        let decided = !matches!(fast, Verdict::Unknown { .. });
        prop_assert!(decided);
        prop_assert_eq!(fast == Verdict::Valid, brute::check(&Register, &h), "history: {:?}", h);
    }

    #[test]
    fn pruning_unobserved_unknown_writes_never_changes_the_verdict(
        raw in proptest::collection::vec(any::<(u8, u8, u8, u8, u8)>(), 0..8),
    ) {
        let h = random_small_history(&raw);
        let pruned = prune_unobserved(h.clone());
        prop_assert_eq!(verdict(&pruned) == Verdict::Valid, brute::check(&Register, &h), "history: {:?}", h);
    }

    #[test]
    fn pruned_real_register_histories_stay_linearizable(
        processes in 1usize..6,
        choices in proptest::collection::vec(any::<u32>(), 0..300),
    ) {
        let h = prune_unobserved(simulate(processes, &choices));
        prop_assert_eq!(verdict(&h), Verdict::Valid, "history: {:?}", h);
    }
}
