//! The nemesis: injects the planned faults into a [`Db`] at their times and heals them,
//! recording each window's start and end in the history.
//!
//! - [`plan`]: the pure part — fault kinds, the seeded schedule, partition shapes.

pub mod plan;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::db::Db;
use crate::history::Recorder;
use plan::{Cuts, Fault, Planned};

/// What the nemesis is doing now (for the progress line).
pub type CurrentFault = Arc<Mutex<Option<String>>>;

/// Runs `plan` against `db`, measured from `start`. Each window: resolve its targets
/// (the leader is asked for at that moment), inject, wait, heal. A step that fails is
/// recorded in the window's event and the run goes on; the end checks judge the result.
pub async fn run<D: Db>(
    db: &mut D,
    plan: &[Planned],
    recorder: &Recorder,
    rng: &mut StdRng,
    start: Instant,
    current: &CurrentFault,
) {
    for window in plan {
        tokio::time::sleep_until(start + window.at).await;
        let leader = db.leader().await;
        let slots = db.slots();
        let name = window.fault.to_string();
        let (nodes, cuts) = match window.fault {
            Fault::Partition(shape) => {
                let (cuts, nodes) = plan::partition(shape, &slots, leader, rng);
                (nodes, cuts)
            }
            Fault::Kill(t) | Fault::Pause(t) | Fault::Wipe(t) | Fault::Member(t) => {
                (plan::targets(t, &slots, leader, rng), Cuts::new())
            }
        };
        if let Ok(mut c) = current.lock() {
            *c = Some(format!("{name} {nodes:?}"));
        }
        // The window opens before the fault is injected and closes after it is healed,
        // so it covers every moment the fault may have been in effect.
        recorder.fault(true, &name, &nodes, None);
        let injected = inject(db, window.fault, &nodes, &cuts).await;
        tokio::time::sleep_until(start + window.at + window.duration).await;
        let healed = heal(db, window.fault, &nodes).await;
        let errors: Vec<String> = [
            injected.err().map(|e| format!("inject: {e}")),
            healed.err().map(|e| format!("heal: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        recorder.fault(
            false,
            &name,
            &nodes,
            (!errors.is_empty()).then(|| errors.join("; ")),
        );
        if let Ok(mut c) = current.lock() {
            *c = None;
        }
    }
}

async fn inject<D: Db>(
    db: &mut D,
    fault: Fault,
    nodes: &[usize],
    cuts: &Cuts,
) -> Result<(), String> {
    let mut errors = Vec::new();
    match fault {
        Fault::Partition(_) => {
            if let Err(e) = db.partition(cuts) {
                errors.push(e.to_string());
            }
        }
        _ => {
            for &n in nodes {
                let r = match fault {
                    Fault::Kill(_) => db.kill(n).await,
                    Fault::Pause(_) => db.pause(n),
                    Fault::Wipe(_) => db.wipe(n).await,
                    Fault::Member(_) => db.remove_member(n).await,
                    Fault::Partition(_) => Ok(()),
                };
                if let Err(e) = r {
                    errors.push(format!("n{n}: {e}"));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

async fn heal<D: Db>(db: &mut D, fault: Fault, nodes: &[usize]) -> Result<(), String> {
    let mut errors = Vec::new();
    match fault {
        Fault::Partition(_) => {
            if let Err(e) = db.partition(&Cuts::new()) {
                errors.push(e.to_string());
            }
        }
        _ => {
            for &n in nodes {
                let r = match fault {
                    Fault::Kill(_) => db.start(n).await,
                    Fault::Pause(_) => db.resume(n),
                    Fault::Wipe(_) | Fault::Member(_) => db.add_member(n).await,
                    Fault::Partition(_) => Ok(()),
                };
                if let Err(e) = r {
                    errors.push(format!("n{n}: {e}"));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Heals whatever a run may have left broken: every process running and resumed, no
/// link cut. Used before the end checks.
pub async fn heal_all<D: Db>(db: &mut D) {
    let _ = db.partition(&Cuts::new());
    for slot in db.slots() {
        let _ = db.resume(slot);
    }
    // Give a quiet moment: anything restarted needs to rejoin before the checks.
    tokio::time::sleep(Duration::from_millis(100)).await;
}
