//! jepsen-lite: starts real clusters, drives concurrent clients, injects faults, records the
//! history and checks it for linearizability.
