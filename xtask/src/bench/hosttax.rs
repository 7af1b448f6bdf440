//! The host tax: what a process the exporter does not watch pays per call
//! while each exporter configuration is attached to an idle gunicorn, against
//! the same calls with nothing attached just before and just after. The
//! configurations take turns in an order that rotates each repetition; the
//! calls run in a child (`bench-loops`).

use std::{
    fs::{self, File},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx, Instance, MeasuredExporter, check_stop,
    loops::{self, Loop},
    measure,
    report::{HostTaxRun, Results},
    scenario::{App, Cell, Variant, WORKERS, Workers},
    sleep,
};
use integration_tests::{fixtures::die_with_parent, tail_file};

/// The gunicorn the exporter attaches to: the trivial app, sync workers,
/// never sent a request while measured.
const CELL: Cell = Cell {
    app: App::Trivial,
    workers: Workers::Sync,
    keepalive: false,
};

/// Before the loops: the exporter's start-up work, or its exit, is over.
const SETTLE: Duration = Duration::from_millis(500);

/// Timed batches per loop and run (each a few ms of CPU).
pub fn batches(quick: bool) -> u32 {
    if quick { 10 } else { 40 }
}

/// Seconds the host-tax phase takes: per run ~0.8 s for settling and the
/// child's start, and the loops (~4 ms a batch); ~2.5 s per exporter start.
pub fn estimate_secs(ctx: &Ctx) -> f64 {
    let exporters = configurations(&ctx.variants).len() as f64 - 1.0;
    let run = 0.8 + Loop::ALL.len() as f64 * ctx.host_tax_batches as f64 * 0.004;
    5.0 + ctx.host_tax_reps as f64 * exporters * (2.0 * run + 2.5)
}

/// Nothing attached (`Plain27`), then the exporter configurations chosen.
pub fn configurations(variants: &[Variant]) -> Vec<Variant> {
    let mut out = vec![Variant::Plain27];
    out.extend(variants.iter().copied().filter(|v| v.is_exporter()));
    out
}

/// Each repetition runs every exporter configuration once, in an order that
/// rotates, with a run with nothing attached before and after each one (the
/// one after is the next one's before): the machine's slow and fast spells
/// last seconds here, so a configuration is compared with the runs just
/// around it.
pub fn run(ctx: &Ctx, res: &mut Results) -> Result<()> {
    let exporters: Vec<Variant> = configurations(&ctx.variants)
        .into_iter()
        .filter(|v| v.is_exporter())
        .collect();
    let calls: Vec<String> = Loop::ALL
        .iter()
        .map(|l| format!("{} {}", l.name(), l.calls()))
        .collect();
    res.env.push((
        "host tax".into(),
        format!(
            "an idle gunicorn 27 (trivial app, {WORKERS} sync workers); {} repetitions; \
             {} batches per loop and run (calls per batch: {}); kernel.bpf_stats_enabled={}",
            ctx.host_tax_reps,
            ctx.host_tax_batches,
            calls.join(", "),
            fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                .unwrap_or_default()
                .trim()
        ),
    ));
    let mut inst = Instance::start(ctx, CELL, Variant::Plain27, "host-tax", false)?;
    inst.workers = measure::children(inst.master());
    let mut seq = 0;
    let mut measure = |inst: &mut Instance, v: Variant, rep: u32| -> Result<()> {
        check_stop()?;
        let tag = format!("{seq:03}-{}", host_tax_name(v));
        let exporter = match v.is_exporter() {
            true => Some(MeasuredExporter::attach(ctx, inst, v, &tag)?),
            false => None,
        };
        sleep(SETTLE)?;
        let measured = run_loops(&inst.dir, &tag, ctx.host_tax_batches)
            .with_context(|| format!("host tax, {} repetition {}", v.short(), rep + 1))?;
        drop(exporter);
        inst.proc.check_alive()?;
        let runs: Vec<HostTaxRun> = measured
            .into_iter()
            .map(|(lp, batches)| HostTaxRun {
                variant: v,
                rep,
                seq,
                lp,
                batches,
            })
            .collect();
        let figures: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {:.0} ns", r.lp.name(), r.ns_per_call()))
            .collect();
        println!(
            "bench:   rep {}/{} {:<14} {}",
            rep + 1,
            ctx.host_tax_reps,
            host_tax_name(v),
            figures.join("  ")
        );
        res.host_tax.extend(runs);
        seq += 1;
        Ok(())
    };
    measure(&mut inst, Variant::Plain27, 0)?;
    for rep in 0..ctx.host_tax_reps {
        let mut order = exporters.clone();
        order.rotate_left(rep as usize % exporters.len().max(1));
        for v in order {
            measure(&mut inst, v, rep)?;
            measure(&mut inst, Variant::Plain27, rep)?;
        }
    }
    Ok(())
}

/// "nothing" for the baseline, else the configuration's short name.
pub fn host_tax_name(v: Variant) -> &'static str {
    if v.is_exporter() {
        v.short()
    } else {
        "nothing"
    }
}

/// One `bench-loops` child: every loop, `batches` timed batches each.
fn run_loops(dir: &Path, tag: &str, batches: u32) -> Result<Vec<(Loop, Vec<f64>)>> {
    let exe = std::env::current_exe().context("finding xtask's own binary")?;
    let err_path = dir.join(format!("loops-{tag}.err"));
    let err =
        File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["bench-loops", "--batches", &batches.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err);
    die_with_parent(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running {} bench-loops", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    fs::write(dir.join(format!("loops-{tag}.out")), stdout.as_bytes())?;
    check_stop()?;
    if !out.status.success() {
        bail!(
            "bench-loops failed ({})\n{}",
            out.status,
            tail_file(&err_path, 10)
        );
    }
    loops::parse_output(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_attached_first() {
        let v = [Variant::Plain27, Variant::EbpfSockets, Variant::Statsd];
        assert_eq!(configurations(&v), [Variant::Plain27, Variant::EbpfSockets]);
        assert_eq!(configurations(&[Variant::Plain23]), [Variant::Plain27]);
        assert_eq!(host_tax_name(Variant::Plain27), "nothing");
    }
}
