//! `agentd bench-export`: writes a synthetic log of N trajectory steps (each a step, a sandbox
//! result and a reward record, with a state update every tenth step; every task of eight steps
//! is one job, submitted and leased with its first step and completed with its last), then
//! measures
//!
//! - a full replay into fresh queue state and domain projections (what start-up does when the
//!   redb job projection is current): events/s;
//! - `agentd rebuild` of the same data directory: the same replay plus the redb job projection
//!   written from scratch: events/s;
//! - a trajectory export of every step to zstd Parquet: rows/s and MB/s;
//! - the equivalent Python path, side by side on the same rows: pyarrow reading the trajectories
//!   as JSONL and writing zstd Parquet at the same level, timed inside Python (interpreter start
//!   and imports excluded), and the ratio of the two.
//!
//! Benchmarks measure; nothing here asserts a speed. `synthetic.rs` writes the log,
//! `python.rs` runs the Python side.

mod python;
mod synthetic;

use agentd::bench_api::DomainProjections;
use agentd::bench_api::LogReader;
use agentd::bench_api::QueueState;
use agentd::bench_api::{write_export, ExportSettings};
use agentd::config::Config;
use agentd_schemas::events::{ExportFormat, ExportKind};
use agentd_schemas::Lsn;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of the benchmark.
pub struct BenchOptions {
    pub steps: u64,
    /// Working directory (a temp dir under it is used and removed).
    pub dir: PathBuf,
    /// Python with pyarrow, for the comparison; skipped when it cannot import pyarrow.
    pub python: Option<String>,
    /// Only write the log into this data directory (and keep it); measure nothing.
    pub write_log: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn run(options: BenchOptions) -> anyhow::Result<()> {
    let config = Config::default();
    if let Some(data_dir) = &options.write_log {
        let log_dir = data_dir.join("log");
        anyhow::ensure!(
            !log_dir.exists(),
            "{} exists already; --write-log writes a new data directory",
            log_dir.display()
        );
        let started = Instant::now();
        let (to, events) = synthetic::write_log(&config, &log_dir, options.steps)?;
        println!(
            "log written to {}: {} records, {events} events in {:.1} s",
            log_dir.display(),
            to.0,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let work = tempfile_dir(&options.dir)?;
    let log_dir = work.join("log");
    println!(
        "bench-export: {} steps, {} cores",
        options.steps,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started = Instant::now();
    let (to, events) = synthetic::write_log(&config, &log_dir, options.steps)?;
    println!(
        "log written: {} records, {events} events in {:.1} s",
        to.0,
        started.elapsed().as_secs_f64()
    );
    let reader = LogReader::open(&log_dir, config.log.frame_bytes_max)?;
    measure_reads(&reader, to, events)?;
    let (domain, queue) = measure_replay(&config, &reader, to, events)?;
    measure_rebuild(&config, &work, events, &domain, &queue)?;
    measure_export(&config, &work, &domain, to, options.python.as_deref())?;
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

/// The parts of a replay, so a regression shows where it is: reading and checking frames, then
/// decoding them (applying is [`measure_replay`]).
fn measure_reads(reader: &LogReader, to: Lsn, events: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut frame_bytes = 0u64;
    for frame in reader.frames(Lsn::ZERO, to) {
        frame_bytes += frame?.payload.len() as u64;
    }
    let read_s = started.elapsed().as_secs_f64();
    println!(
        "read frames (CRC checked): {} frames, {:.0} MB in {read_s:.2} s = {:.0} frames/s",
        to.0,
        mb(frame_bytes),
        to.0 as f64 / read_s
    );
    let started = Instant::now();
    agentd::bench_api::for_each_record(reader, Lsn::ZERO, to, |_, record| {
        std::hint::black_box(record);
        Ok(())
    })?;
    let decode_s = started.elapsed().as_secs_f64();
    println!(
        "read + decode: {events} events in {decode_s:.2} s = {:.0} events/s",
        events as f64 / decode_s
    );
    Ok(())
}

/// A full replay into fresh queue state and domain projections, which it returns.
fn measure_replay(
    config: &Config,
    reader: &LogReader,
    to: Lsn,
    events: u64,
) -> anyhow::Result<(DomainProjections, QueueState)> {
    let domain = DomainProjections::new(&config.datasets)?;
    let mut queue = QueueState::new();
    let started = Instant::now();
    let mut domain_projection = &domain;
    agentd::bench_api::drive(
        reader,
        Lsn::ZERO,
        to,
        agentd::bench_api::FRAMES_PER_TRANSACTION_MAX,
        &mut [&mut queue, &mut domain_projection],
        |_| {},
    )?;
    let replay_s = started.elapsed().as_secs_f64();
    println!(
        "replay (queue state + domain projections): {events} events in {replay_s:.2} s = {:.0} events/s",
        events as f64 / replay_s
    );
    Ok((domain, queue))
}

/// `agentd rebuild` of the data directory, checked against the replay's digests.
fn measure_rebuild(
    config: &Config,
    work: &Path,
    events: u64,
    domain: &DomainProjections,
    queue: &QueueState,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = agentd::rebuild::rebuild(config, work, None)?;
    let rebuild_s = started.elapsed().as_secs_f64();
    println!(
        "agentd rebuild (redb job projection + queue state + domain projections): {events} events in {rebuild_s:.2} s = {:.0} events/s",
        events as f64 / rebuild_s
    );
    anyhow::ensure!(
        report.queue == queue.digest() && report.trajectories == domain.digests().trajectories,
        "the rebuild and the replay disagree"
    );
    Ok(())
}

/// A trajectory export of every step to zstd Parquet, then pyarrow on the same rows when a
/// `python` is given.
fn measure_export(
    config: &Config,
    work: &Path,
    domain: &DomainProjections,
    to: Lsn,
    python: Option<&str>,
) -> anyhow::Result<()> {
    let settings = ExportSettings::new(config, work, Some(work.join("exports")))?;
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let outcome = write_export(
        domain,
        &settings,
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )?;
    let export_s = started.elapsed().as_secs_f64();
    let export_cpu_s = process_cpu_s() - cpu_before;
    let bytes: u64 = outcome.manifest.files.iter().map(|file| file.bytes).sum();
    let rows = outcome.manifest.rows;

    // The same rows as JSONL, for the Python path (written outside the timed sections).
    let jsonl = work.join("trajectories.jsonl");
    let jsonl_bytes = python::write_jsonl(domain, &jsonl, to)?;
    println!(
        "rust export: {rows} rows, {:.1} MB zstd Parquet ({} files) in {export_s:.2} s = {:.0} rows/s, {:.1} MB/s written, {:.1} MB/s of JSONL-equivalent input",
        mb(bytes),
        outcome.manifest.files.len(),
        rows as f64 / export_s,
        mb(bytes) / export_s,
        mb(jsonl_bytes) / export_s
    );
    // CPU time of every thread of the export: unlike rows/s it does not depend on what else
    // runs on the machine, so it shows a change in the work done on a busy one.
    println!(
        "rust export CPU: {export_cpu_s:.2} s over {export_s:.2} s = {:.2} cores busy, {:.2} us per row",
        export_cpu_s / export_s,
        export_cpu_s * 1e6 / rows.max(1) as f64
    );
    let Some(python) = python else {
        println!("python comparison skipped (--python not given)");
        return Ok(());
    };
    let level = settings.zstd_level;
    // The export's encoding threads run EXPORT_WRITER_NICE_ADDED nice values lower than the
    // daemon (no request waits on them), so on a busy machine they get a smaller share of the
    // cores; pyarrow runs at that same priority, or the comparison would measure the scheduler.
    let nice = agentd::bench_api::EXPORT_WRITER_NICE_ADDED;
    match python::python_export(python, &jsonl, &work.join("python.parquet"), level, nice) {
        Ok(python_s) => println!(
            "python (pyarrow.json.read_json + pyarrow.parquet.write_table zstd level {level}, nice +{nice} like the export's encoding threads): {python_s:.2} s = {:.0} rows/s; rust is {:.2}x faster",
            rows as f64 / python_s,
            python_s / export_s
        ),
        Err(error) => println!("python comparison skipped: {error}"),
    }
    Ok(())
}

/// User and system CPU seconds of this process, all threads, so far (0 where unknown).
fn process_cpu_s() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let seconds =
        |time: nix::sys::time::TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn tempfile_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!("agentd-bench-export-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
