//! The policy's saved state: every mode round-trips byte for byte after being driven, and the
//! bytes of a few deterministic policies can be dumped for comparison across a refactoring
//! (`UNISCALE_STATE_DUMP=dir cargo test --release --test policy_state`, then `cmp`); the
//! decisions of the dumped runs are written next to them.

mod common;

use common::{build, drive, MODES};
use uniscale::policy::Policy;

#[test]
fn every_mode_round_trips_byte_for_byte() {
    for mode in MODES {
        for seed in [1, 2] {
            let mut p = build(mode, seed);
            for steps in [0, 5, 60] {
                let _ = drive(&mut p, steps, seed * 100 + steps as u64);
                let bytes = p.to_bytes();
                let q = Policy::from_bytes(&bytes)
                    .unwrap_or_else(|e| panic!("{mode:?} after {steps} steps: {e}"));
                assert!(q.to_bytes() == bytes, "{mode:?} after {steps} steps");
                q.check_invariants().unwrap();
                // the loaded policy runs on (not bit for bit like the original: loading
                // refactors A^-1 from A, so scores can differ in the last bits)
                let mut b = q;
                let _ = drive(&mut b, 10, 7);
                b.check_invariants().unwrap();
            }
        }
    }
}

#[test]
fn dump_state_for_comparison() {
    let Some(dir) = std::env::var_os("UNISCALE_STATE_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for mode in MODES {
        let mut p = build(mode, 3);
        let decisions = drive(&mut p, 80, 11);
        std::fs::write(dir.join(format!("{mode:?}.bin")), p.to_bytes()).unwrap();
        std::fs::write(
            dir.join(format!("{mode:?}.decisions.txt")),
            format!("{decisions:#?}"),
        )
        .unwrap();
    }
}
