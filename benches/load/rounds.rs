//! The head-to-head rows (`pingora`, `public`, `public-log`, `auth-nocache`, `auth-cache`),
//! measured in interleaved rounds: every server is started first and stays up, then each
//! round measures each row in turn, `BENCH_ROUNDS` times (3). A row's throughput and p99 are
//! the medians of its rounds, so that a burst of other work on a shared machine moves one
//! round of every row alike instead of the whole of one row; the ratios the targets check are
//! taken between those medians. The table's other columns are the median round's.

use sessiongate_testkit::ProcessGuard;

use crate::driver::{Ctx, Target};
use crate::report::Row;

/// One row of the head-to-head: its server stays up across the rounds.
pub struct Contender {
    pub row: Row,
    pub target: Target,
    pub server: ProcessGuard,
    /// Checked before the first round and after the last.
    pub check: Box<dyn Fn(&Target)>,
}

/// Measures every contender `rounds` times, interleaved, and returns their rows.
pub fn interleaved(ctx: &mut Ctx<'_>, mut contenders: Vec<Contender>, rounds: usize) -> Vec<Row> {
    for c in &contenders {
        (c.check)(&c.target);
    }
    let mut measured: Vec<Vec<Row>> = contenders.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (c, done) in contenders.iter_mut().zip(&mut measured) {
            eprintln!("load bench: round {round} of {rounds}");
            let mut r = Row::new(c.row.key, c.row.label);
            ctx.measure(&mut r, &c.target, Some(&c.server));
            c.server.assert_running();
            done.push(r);
        }
    }
    contenders
        .into_iter()
        .zip(measured)
        .map(|(c, mut done)| {
            (c.check)(&c.target);
            let mut row = c.row;
            row.rounds = done
                .iter()
                .map(|r| (r.rps().unwrap_or(0.0), r.p99().unwrap_or(0.0)))
                .collect();
            // The median round by throughput gives the other columns.
            done.sort_by(|a, b| a.rps().unwrap_or(0.0).total_cmp(&b.rps().unwrap_or(0.0)));
            let mid = done.len() / 2;
            let median = done.swap_remove(mid);
            row.stats = median.stats;
            row.redis = median.redis;
            row.rss_kib = done
                .iter()
                .filter_map(|r| r.rss_kib)
                .chain(median.rss_kib)
                .max();
            row
        })
        .collect()
}

/// The median of `values` (the upper one of an even count).
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}
