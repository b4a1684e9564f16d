//! The nemesis as plain data: which faults a run injects, when, and which links a
//! partition cuts. Pure and seeded, so a run's schedule is reproducible.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

/// A family of faults, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NemesisKind {
    Kill,
    Pause,
    Partition,
    Wipe,
    Member,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 5] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Wipe,
        NemesisKind::Member,
    ];

    /// Parses a comma list: `none`, `all`, or names of kinds.
    pub fn parse_list(spec: &str) -> Result<Vec<NemesisKind>, String> {
        let mut kinds = BTreeSet::new();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "none" => {}
                "all" => kinds.extend(NemesisKind::ALL),
                "kill" => {
                    kinds.insert(NemesisKind::Kill);
                }
                "pause" => {
                    kinds.insert(NemesisKind::Pause);
                }
                "partition" => {
                    kinds.insert(NemesisKind::Partition);
                }
                "wipe" => {
                    kinds.insert(NemesisKind::Wipe);
                }
                "member" => {
                    kinds.insert(NemesisKind::Member);
                }
                other => {
                    return Err(format!(
                        "unknown nemesis {other:?} (expected none, kill, pause, partition, wipe, member or all)"
                    ));
                }
            }
        }
        Ok(kinds.into_iter().collect())
    }

    /// Every fault of this kind; the first one targets the leader (see [`schedule`]).
    fn faults(self) -> Vec<Fault> {
        match self {
            NemesisKind::Kill => vec![
                Fault::Kill(Target::Leader),
                Fault::Kill(Target::One),
                Fault::Kill(Target::Majority),
            ],
            NemesisKind::Pause => vec![
                Fault::Pause(Target::Leader),
                Fault::Pause(Target::One),
                Fault::Pause(Target::Majority),
            ],
            NemesisKind::Partition => vec![
                Fault::Partition(Shape::IsolateLeader),
                Fault::Partition(Shape::IsolateOne),
                Fault::Partition(Shape::LeaderInMinority),
                Fault::Partition(Shape::Bridge),
            ],
            NemesisKind::Wipe => vec![Fault::Wipe(Target::Leader), Fault::Wipe(Target::One)],
            NemesisKind::Member => vec![Fault::Member(Target::Leader), Fault::Member(Target::One)],
        }
    }
}

/// Which nodes a process fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    One,
    Leader,
    /// A majority, the leader among them.
    Majority,
}

/// How a partition splits the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One random node alone.
    IsolateOne,
    /// The leader alone.
    IsolateLeader,
    /// A minority holding the old leader against a majority: the old leader keeps
    /// running where it cannot commit (for 3 nodes the same as isolating it).
    LeaderInMinority,
    /// Two halves that cannot see each other, and one node that sees both.
    Bridge,
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// kill -9, restarted on its data at the end of the window.
    Kill(Target),
    /// SIGSTOP, SIGCONT at the end.
    Pause(Target),
    Partition(Shape),
    /// kill -9 and lose the data dir; at the end the node comes back empty under a new
    /// id, as a learner, then a voter (its old id removed).
    Wipe(Target),
    /// Removed from the membership and stopped; added back as a new member at the end.
    Member(Target),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::One => "one",
            Target::Leader => "leader",
            Target::Majority => "majority",
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(t) => write!(f, "kill {t}"),
            Fault::Pause(t) => write!(f, "pause {t}"),
            Fault::Wipe(t) => write!(f, "wipe {t}"),
            Fault::Member(t) => write!(f, "member-remove {t}"),
            Fault::Partition(s) => f.write_str(match s {
                Shape::IsolateOne => "partition isolate-one",
                Shape::IsolateLeader => "partition isolate-leader",
                Shape::LeaderInMinority => "partition leader-in-minority",
                Shape::Bridge => "partition bridge",
            }),
        }
    }
}

impl Fault {
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Kill(_) => NemesisKind::Kill,
            Fault::Pause(_) => NemesisKind::Pause,
            Fault::Partition(_) => NemesisKind::Partition,
            Fault::Wipe(_) => NemesisKind::Wipe,
            Fault::Member(_) => NemesisKind::Member,
        }
    }
}

/// When faults start and how long they last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Quiet time before the first fault.
    pub first: Duration,
    /// How long each fault lasts.
    pub fault: Duration,
    /// Quiet time between the end of one fault and the start of the next.
    pub quiet: Duration,
}

/// One planned fault window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub duration: Duration,
    pub fault: Fault,
}

/// The fault schedule of a run: windows one after another (never overlapping), each fully
/// inside `time_limit`. Kinds take turns in a seeded order; within a kind, the first
/// fault targets the leader — a short run (as in CI) must exercise the role where most
/// consensus bugs live — and the rest come from seeded shuffles of all its faults.
pub fn schedule(
    kinds: &[NemesisKind],
    time_limit: Duration,
    timing: Timing,
    rng: &mut impl Rng,
) -> Vec<Planned> {
    let mut out = Vec::new();
    if kinds.is_empty() || timing.fault.is_zero() {
        return out;
    }
    let mut order = kinds.to_vec();
    order.shuffle(rng);
    let mut decks: Vec<Vec<Fault>> = order
        .iter()
        .map(|k| {
            let mut deck = k.faults();
            // Dealt from the end: the leader fault first.
            deck.reverse();
            deck
        })
        .collect();
    let mut at = timing.first;
    let mut turn = 0;
    while at + timing.fault <= time_limit {
        let k = turn % order.len();
        if decks[k].is_empty() {
            let mut deck = order[k].faults();
            deck.shuffle(rng);
            decks[k] = deck;
        }
        if let Some(fault) = decks[k].pop() {
            out.push(Planned {
                at,
                duration: timing.fault,
                fault,
            });
        }
        at += timing.fault + timing.quiet;
        turn += 1;
    }
    out
}

/// Symmetric cut links between node slots, each pair stored as (low, high).
pub type Cuts = BTreeSet<(usize, usize)>;

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Cuts every link between `a` and `b` (two disjoint groups).
pub fn split(a: &[usize], b: &[usize]) -> Cuts {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| pair(*x, *y)))
        .filter(|(x, y)| x != y)
        .collect()
}

/// The links a partition of `shape` cuts among `nodes`, given the current `leader`;
/// random choices come from `rng`. Returns the cuts and the nodes on the minority side
/// (or the bridge, for `Bridge`), for the history.
pub fn partition(
    shape: Shape,
    nodes: &[usize],
    leader: Option<usize>,
    rng: &mut impl Rng,
) -> (Cuts, Vec<usize>) {
    if nodes.len() < 2 {
        return (Cuts::new(), Vec::new());
    }
    let random = |rng: &mut _| nodes[rng_index(rng, nodes.len())];
    let lead = leader.filter(|l| nodes.contains(l));
    let isolate = |x: usize| {
        let rest: Vec<usize> = nodes.iter().copied().filter(|n| *n != x).collect();
        (split(&[x], &rest), vec![x])
    };
    match shape {
        Shape::IsolateOne => isolate(random(rng)),
        Shape::IsolateLeader => isolate(lead.unwrap_or_else(|| random(rng))),
        Shape::LeaderInMinority => {
            let first = lead.unwrap_or_else(|| random(rng));
            let mut others: Vec<usize> = nodes.iter().copied().filter(|n| *n != first).collect();
            others.shuffle(rng);
            let minority_size = (nodes.len() - 1) / 2;
            let mut minority = vec![first];
            minority.extend(others.drain(..minority_size.saturating_sub(1)));
            minority.sort_unstable();
            (split(&minority, &others), minority)
        }
        Shape::Bridge => {
            // The leader sits in one half, a random other node is the bridge.
            let first = lead.unwrap_or_else(|| random(rng));
            let mut others: Vec<usize> = nodes.iter().copied().filter(|n| *n != first).collect();
            others.shuffle(rng);
            let bridge = others.remove(0);
            let half = (nodes.len() - 1) / 2;
            let mut left = vec![first];
            left.extend(others.drain(..half.saturating_sub(1).min(others.len())));
            (split(&left, &others), vec![bridge])
        }
    }
}

fn rng_index(rng: &mut impl Rng, len: usize) -> usize {
    rng.random_range(0..len)
}

/// Picks the nodes a process fault hits: `One` a random node, `Leader` the leader (or a
/// random node when none is known), `Majority` the leader and random others.
pub fn targets(
    target: Target,
    nodes: &[usize],
    leader: Option<usize>,
    rng: &mut impl Rng,
) -> Vec<usize> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let lead = leader.filter(|l| nodes.contains(l));
    let random = nodes[rng_index(rng, nodes.len())];
    match target {
        Target::One => vec![random],
        Target::Leader => vec![lead.unwrap_or(random)],
        Target::Majority => {
            let first = lead.unwrap_or(random);
            let mut others: Vec<usize> = nodes.iter().copied().filter(|n| *n != first).collect();
            others.shuffle(rng);
            let mut picked = vec![first];
            picked.extend(others.into_iter().take(nodes.len() / 2));
            picked.sort_unstable();
            picked
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const TIMING: Timing = Timing {
        first: Duration::from_secs(2),
        fault: Duration::from_secs(4),
        quiet: Duration::from_secs(3),
    };

    #[test]
    fn nemesis_lists_parse_and_expand_all() {
        assert_eq!(NemesisKind::parse_list("none"), Ok(vec![]));
        assert_eq!(
            NemesisKind::parse_list("partition,kill"),
            Ok(vec![NemesisKind::Kill, NemesisKind::Partition])
        );
        assert_eq!(NemesisKind::parse_list("all").map(|k| k.len()), Ok(5));
        assert!(NemesisKind::parse_list("meteor").is_err());
    }

    #[test]
    fn schedule_is_seeded_fits_the_time_limit_and_hits_leaders_first() {
        let kinds = [NemesisKind::Partition, NemesisKind::Kill];
        let plan = |seed| {
            schedule(
                &kinds,
                Duration::from_secs(60),
                TIMING,
                &mut StdRng::seed_from_u64(seed),
            )
        };
        assert_eq!(plan(7), plan(7));
        let p = plan(7);
        assert!(
            p.iter()
                .all(|w| w.at + w.duration <= Duration::from_secs(60))
        );
        assert!(
            p.windows(2)
                .all(|w| w[0].at + w[0].duration + TIMING.quiet <= w[1].at)
        );
        let leader_first: std::collections::HashSet<Fault> =
            p[..2].iter().map(|w| w.fault).collect();
        assert_eq!(
            leader_first,
            std::collections::HashSet::from([
                Fault::Kill(Target::Leader),
                Fault::Partition(Shape::IsolateLeader)
            ])
        );
        // Kinds alternate.
        assert!(p.windows(2).all(|w| w[0].fault.kind() != w[1].fault.kind()));
        // A 15 s run still gets both leader faults.
        let short = schedule(
            &kinds,
            Duration::from_secs(15),
            TIMING,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(short.len(), 2);
        assert!(
            schedule(
                &[],
                Duration::from_secs(60),
                TIMING,
                &mut StdRng::seed_from_u64(1)
            )
            .is_empty()
        );
    }

    #[test]
    fn isolating_the_leader_cuts_exactly_its_links() {
        let mut rng = StdRng::seed_from_u64(3);
        let (cuts, minority) = partition(Shape::IsolateLeader, &[1, 2, 3], Some(2), &mut rng);
        assert_eq!(cuts, Cuts::from([(1, 2), (2, 3)]));
        assert_eq!(minority, vec![2]);
    }

    #[test]
    fn leader_in_minority_of_five_keeps_a_majority_of_three_together() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (cuts, minority) =
                partition(Shape::LeaderInMinority, &[1, 2, 3, 4, 5], Some(4), &mut rng);
            assert_eq!(minority.len(), 2);
            assert!(minority.contains(&4));
            assert_eq!(cuts.len(), 6, "2 x 3 links cut");
        }
    }

    #[test]
    fn a_bridge_node_keeps_every_link() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let nodes = [1, 2, 3, 4, 5];
            let (cuts, bridge) = partition(Shape::Bridge, &nodes, Some(1), &mut rng);
            assert_eq!(cuts.len(), 4, "two halves of 2: 4 links cut");
            assert!(cuts.iter().all(|(a, b)| *a != bridge[0] && *b != bridge[0]));
            let (cuts3, _) = partition(Shape::Bridge, &[1, 2, 3], Some(1), &mut rng);
            assert_eq!(cuts3.len(), 1);
        }
    }

    #[test]
    fn majority_targets_include_the_leader() {
        let mut rng = StdRng::seed_from_u64(9);
        let t = targets(Target::Majority, &[1, 2, 3, 4, 5], Some(5), &mut rng);
        assert_eq!(t.len(), 3);
        assert!(t.contains(&5));
        assert_eq!(
            targets(Target::Leader, &[1, 2, 3], Some(3), &mut rng),
            vec![3]
        );
    }
}
