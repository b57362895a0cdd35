//! Per-kernel timing of recorded work, for `bench step --profile`. While a profile is open
//! every recorded command (dispatch, copy, clear) is bracketed by GPU timestamps where the
//! adapter has timestamp queries inside encoders, or submitted alone and timed on the host
//! otherwise. Each dispatch carries a label (launchers name convolutions by direction and
//! shape) and, where the launcher knows it, its floating-point operation count.

use std::collections::HashMap;
use std::time::Instant;

use crate::error::{Error, Result};

/// The features GPU timing needs; requested from adapters that have them.
pub const TIMESTAMP_FEATURES: wgpu::Features =
    wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);

/// What one recorded command did, for the profile.
#[derive(Debug, Clone)]
pub struct Note {
    /// Kernel and shape, e.g. `conv2d forward 16->32 32x32 s2`.
    pub label: String,
    /// Floating-point operations (0 where not counted).
    pub flops: f64,
    /// Bytes of the buffers it bound (an upper bound on its memory traffic for kernels that
    /// touch each element once).
    pub bytes: f64,
}

/// Totals of one label over the profiled work.
#[derive(Debug, Clone)]
pub struct ProfileLine {
    /// Kernel and shape.
    pub label: String,
    /// Seconds spent in it.
    pub seconds: f64,
    /// Commands recorded under it.
    pub count: u64,
    /// Floating-point operations, summed.
    pub flops: f64,
    /// Bytes bound, summed.
    pub bytes: f64,
}

impl ProfileLine {
    /// The family the label belongs to: its first word, with convolutions split by direction.
    pub fn family(&self) -> String {
        let mut words = self.label.split_whitespace();
        let first = words.next().unwrap_or("");
        match first {
            "conv2d" => format!("conv2d {}", words.next().unwrap_or("")),
            other => other.to_string(),
        }
    }
}

/// What a profile measured.
#[derive(Debug, Clone)]
pub struct Profile {
    /// One line per label, longest first.
    pub lines: Vec<ProfileLine>,
    /// `"GPU timestamps"` or `"host timing"` (each command submitted and waited for alone).
    pub timer: &'static str,
}

impl Profile {
    /// Seconds of all timed commands.
    pub fn total_seconds(&self) -> f64 {
        self.lines.iter().map(|l| l.seconds).sum()
    }

    /// The lines merged by [`ProfileLine::family`], longest first.
    pub fn families(&self) -> Vec<ProfileLine> {
        let mut by: HashMap<String, ProfileLine> = HashMap::new();
        for l in &self.lines {
            let f = l.family();
            let e = by.entry(f.clone()).or_insert_with(|| ProfileLine {
                label: f,
                seconds: 0.0,
                count: 0,
                flops: 0.0,
                bytes: 0.0,
            });
            e.seconds += l.seconds;
            e.count += l.count;
            e.flops += l.flops;
            e.bytes += l.bytes;
        }
        sorted(by.into_values().collect())
    }

    /// Every total divided by `n` (per step when `n` steps were profiled).
    pub fn per(&self, n: usize) -> Profile {
        let d = n.max(1) as f64;
        Profile {
            lines: self
                .lines
                .iter()
                .map(|l| ProfileLine {
                    label: l.label.clone(),
                    seconds: l.seconds / d,
                    count: (l.count as f64 / d).round() as u64,
                    flops: l.flops / d,
                    bytes: l.bytes / d,
                })
                .collect(),
            timer: self.timer,
        }
    }
}

fn sorted(mut lines: Vec<ProfileLine>) -> Vec<ProfileLine> {
    lines.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.label.cmp(&b.label)));
    lines
}

/// GPU timestamp resources for one flush of at most `capacity` commands.
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: usize,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

/// An open profile: the timer and the totals so far.
pub(super) struct Profiler {
    timestamps: Option<Timestamps>,
    totals: HashMap<String, ProfileLine>,
}

impl Profiler {
    /// A profiler for flushes of at most `capacity` commands, with GPU timestamps if asked
    /// for and the device was created with [`TIMESTAMP_FEATURES`].
    pub(super) fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        capacity: usize,
        gpu_timestamps: bool,
    ) -> Profiler {
        let usable = gpu_timestamps && device.features().contains(TIMESTAMP_FEATURES);
        let timestamps = usable.then(|| {
            let queries = 2 * capacity as u32;
            let bytes = 8 * queries as u64;
            let buffer = |label, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage,
                    mapped_at_creation: false,
                })
            };
            Timestamps {
                set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: queries,
                }),
                resolve: buffer(
                    "profile resolve",
                    wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                ),
                staging: buffer(
                    "profile staging",
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                ),
                capacity,
                period_ns: queue.get_timestamp_period() as f64,
            }
        });
        Profiler {
            timestamps,
            totals: HashMap::new(),
        }
    }

    /// Whether commands are timed on the GPU (else each is submitted alone and host-timed).
    pub(super) fn on_gpu(&self) -> bool {
        self.timestamps.is_some()
    }

    /// Adds `seconds` of one command described by `note`.
    pub(super) fn add(&mut self, note: &Note, seconds: f64) {
        let e = self
            .totals
            .entry(note.label.clone())
            .or_insert_with(|| ProfileLine {
                label: note.label.clone(),
                seconds: 0.0,
                count: 0,
                flops: 0.0,
                bytes: 0.0,
            });
        e.seconds += seconds;
        e.count += 1;
        e.flops += note.flops;
        e.bytes += note.bytes;
    }

    /// Writes the timestamp before (`end` false) or after command `i` of a flush.
    pub(super) fn stamp(&self, enc: &mut wgpu::CommandEncoder, i: usize, end: bool) {
        if let Some(ts) = &self.timestamps {
            assert!(
                i < ts.capacity,
                "more commands in one flush than timestamps"
            );
            enc.write_timestamp(&ts.set, (2 * i + end as usize) as u32);
        }
    }

    /// Copies the timestamps of `n` commands to the staging buffer (end of a flush).
    pub(super) fn resolve(&self, enc: &mut wgpu::CommandEncoder, n: usize) {
        if let (Some(ts), true) = (&self.timestamps, n > 0) {
            let queries = 2 * n as u32;
            enc.resolve_query_set(&ts.set, 0..queries, &ts.resolve, 0);
            enc.copy_buffer_to_buffer(&ts.resolve, 0, &ts.staging, 0, 8 * queries as u64);
        }
    }

    /// After the flush's submission: waits for it and adds each command's time to `notes`'s
    /// labels, in order.
    pub(super) fn collect(&mut self, device: &wgpu::Device, notes: &[Note]) -> Result<()> {
        let Some(ts) = &self.timestamps else {
            return Ok(());
        };
        if notes.is_empty() {
            return Ok(());
        }
        let bytes = 16 * notes.len() as u64;
        let (tx, rx) = std::sync::mpsc::channel();
        ts.staging
            .map_async(wgpu::MapMode::Read, ..bytes, move |r| {
                let _ = tx.send(r);
            });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("waiting for profile timestamps: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Device("timestamp readback never completed".into()))?
            .map_err(|e| Error::Device(format!("mapping profile timestamps: {e}")))?;
        let ticks: Vec<u64> = {
            let view = ts
                .staging
                .get_mapped_range(..bytes)
                .map_err(|e| Error::Device(format!("reading profile timestamps: {e:?}")))?;
            bytemuck::cast_slice(&view).to_vec()
        };
        ts.staging.unmap();
        let period = ts.period_ns;
        for (i, note) in notes.iter().enumerate() {
            let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period * 1e-9;
            self.add(note, dt);
        }
        Ok(())
    }

    /// Times `f` (one command submitted alone and waited for) on the host under `note`.
    pub(super) fn host_timed(&mut self, note: &Note, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let t = Instant::now();
        f()?;
        self.add(note, t.elapsed().as_secs_f64());
        Ok(())
    }

    /// The totals so far.
    pub(super) fn finish(self) -> Profile {
        Profile {
            timer: if self.timestamps.is_some() {
                "GPU timestamps"
            } else {
                "host timing"
            },
            lines: sorted(self.totals.into_values().collect()),
        }
    }
}
