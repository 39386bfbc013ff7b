//! `cheater`: three honest MEF flows and one MEF sender that ignores its allocation and sends
//! at the full bottleneck rate, through the MEF router (RTT 50 ms, buffer 1 BDP). The honest
//! flows' goodput against their fair share (C/4 in goodput terms): the router's policer must
//! keep it. 30 s (quick 8 s).

use std::time::Duration;

use super::coexistence::{run_mixed, spec};
use super::{CAPACITY_BPS, Cell, Params, cell_seed};
use crate::protocol::{Conduct, Protocol};

/// Scenario name.
pub const NAME: &str = "cheater";

/// The single cell.
pub fn cells(p: Params) -> Vec<Cell> {
    let seed = cell_seed(p.seed, NAME);
    let total = Duration::from_secs(if p.quick { 8 } else { 30 });
    let specs = vec![
        spec(Protocol::Mef, 0, Conduct::Honest, "honest-0"),
        spec(Protocol::Mef, 1, Conduct::Honest, "honest-1"),
        spec(Protocol::Mef, 2, Conduct::Honest, "honest-2"),
        spec(
            Protocol::Mef,
            3,
            Conduct::IgnoreRate(CAPACITY_BPS),
            "cheater",
        ),
    ];
    vec![Cell {
        scenario: NAME,
        label: "3 honest mef + 1 cheater".to_string(),
        run: Box::new(move || run_mixed(NAME, &specs, total, seed)),
    }]
}
