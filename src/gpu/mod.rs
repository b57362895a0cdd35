//! The GPU runtime: device, buffer pool, pipeline cache and a command recorder that batches
//! dispatches into few submissions. It knows WGSL kernels and buffers, nothing of autograd.
//! The file is longer than most because `Gpu` is one object whose methods (buffers, uploads,
//! reads, flushes, pipelines) share the recorder's state; the adapter choice, the buffer pool,
//! the shader sources, the parameter layouts and the dispatch checks live in the submodules.

pub mod adapter;
mod dispatch;
pub mod kernel_choice;
pub mod params;
pub mod pool;
pub mod profile;
pub mod shaders;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::error::{Error, Result};
pub use adapter::AdapterRequest;
pub use kernel_choice::{ConvAlgo, Tiling};
pub(crate) use params::kernel_params;
pub use params::{KernelParams, ParamLayout};
use pool::BufferPool;
use profile::{Note, Profiler};
pub use profile::{Profile, ProfileLine};
use shaders::BindingKind;

/// Bytes reserved per dispatch in the parameter arena (the common uniform offset alignment).
const PARAM_SLOT: u64 = 256;
/// Dispatches recorded before the recorder submits on its own.
const MAX_BATCH: usize = 1024;
/// Workgroups per dimension that every adapter supports.
pub const MAX_GROUPS: u32 = 65535;

/// A compute pipeline with the layout naga's reflection gave it.
struct Pipeline {
    id: u64,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: Vec<(u32, BindingKind)>,
    /// Bytes of the family's uniform parameter struct as naga lays it out (0 without one).
    params_size: u32,
}

/// One parsed shader family: naga's module (for reflection) and the driver's module.
struct Family {
    naga: naga::Module,
    info: naga::valid::ModuleInfo,
    module: wgpu::ShaderModule,
    params_size: u32,
}

enum Cmd {
    Dispatch {
        pipe: Rc<Pipeline>,
        bind: wgpu::BindGroup,
        offset: u32,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        dst: wgpu::Buffer,
        bytes: u64,
    },
    Clear {
        buf: wgpu::Buffer,
    },
}

/// A recorded command and, while a profile is open, what it did.
struct Recorded {
    cmd: Cmd,
    note: Option<Note>,
}

#[derive(Default)]
struct Recorder {
    cmds: Vec<Recorded>,
    params: Vec<u8>,
}

/// Which kernel to run: entry point and pipeline-override constants of the shader family whose
/// parameters `P` mirrors (so a launcher cannot pass another family's parameters).
#[derive(Debug, Clone, Copy)]
pub struct Kernel<'a, P> {
    /// Shader family (file name without `.wgsl`), `P::SHADER`.
    pub shader: &'static str,
    /// Entry point in that file.
    pub entry: &'static str,
    /// Values for the file's `override` constants (specialisation).
    pub constants: &'a [(&'static str, f64)],
    // Marks the parameter type without owning one.
    params: PhantomData<fn(&P)>,
}

impl<P: KernelParams> Kernel<'static, P> {
    /// Entry point `entry` of `P`'s shader family, with no specialisation constants.
    pub const fn new(entry: &'static str) -> Self {
        Kernel::with_constants(entry, &[])
    }
}

impl<'a, P: KernelParams> Kernel<'a, P> {
    /// Entry point `entry` of `P`'s shader family, with values for its override constants.
    pub const fn with_constants(entry: &'static str, constants: &'a [(&'static str, f64)]) -> Self {
        Kernel {
            shader: P::SHADER,
            entry,
            constants,
            params: PhantomData,
        }
    }
}

/// Counters for benchmarks and memory reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuStats {
    /// Dispatches recorded since creation.
    pub dispatches: u64,
    /// Command buffers submitted since creation.
    pub submits: u64,
    /// Bytes in buffers currently held by tensors.
    pub live_bytes: u64,
    /// Peak of `live_bytes` since the last [`Gpu::reset_peak`].
    pub peak_bytes: u64,
    /// Bytes parked in the pool's free lists.
    pub free_bytes: u64,
}

struct GpuInner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    families: RefCell<HashMap<&'static str, Rc<Family>>>,
    pipelines: RefCell<HashMap<String, Rc<Pipeline>>>,
    bind_groups: RefCell<HashMap<(u64, Vec<u64>), wgpu::BindGroup>>,
    pool: RefCell<BufferPool>,
    rec: RefCell<Recorder>,
    profiler: RefCell<Option<Profiler>>,
    arena: wgpu::Buffer,
    next_pipeline: Cell<u64>,
    dispatches: Cell<u64>,
    submits: Cell<u64>,
    trace: bool,
    checked: bool,
    conv_algo: Cell<ConvAlgo>,
    /// Never `Auto`: resolved for the adapter when set.
    tiling: Cell<Tiling>,
}

/// A handle to the GPU: cheap to clone, single-threaded.
#[derive(Clone)]
pub struct Gpu(Rc<GpuInner>);

/// A pooled storage buffer; returns to the pool when dropped.
pub struct Buffer {
    gpu: Gpu,
    id: u64,
    buf: Option<wgpu::Buffer>,
    /// Bytes the owner asked for (the buffer may be larger).
    pub bytes: u64,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.gpu.0.pool.borrow_mut().give(self.id, b);
        }
    }
}

impl Buffer {
    fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer present until drop")
    }

    /// The GPU this buffer lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Gpu {
    /// Opens the adapter `req` selects and creates a device on it.
    pub fn new(req: &AdapterRequest) -> Result<Gpu> {
        let adapter = adapter::select(req)?;
        let gpu = Self::from_adapter(adapter)?;
        if let Some(algo) = req.conv {
            gpu.set_conv_algo(algo);
        }
        if let Some(tiling) = req.tiling {
            gpu.set_tiling(tiling);
        }
        Ok(gpu)
    }

    /// Opens the default adapter (flags empty; env vars honoured).
    pub fn default_device() -> Result<Gpu> {
        Self::new(&AdapterRequest::default())
    }

    /// Creates a device on `adapter` with the limits the kernels are tested to fit
    /// (WebGPU's defaults, see [`adapter::device_limits`]).
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        if let Some(why) = adapter::unusable_reason(&adapter) {
            return Err(Error::AdapterTooSmall {
                adapter: info.name,
                reason: why,
            });
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("dynloss-wgpu"),
            // Timestamps only serve `bench step --profile`; nothing else needs a feature.
            required_features: adapter.features() & profile::TIMESTAMP_FEATURES,
            required_limits: adapter::device_limits(&adapter),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("param arena"),
            size: PARAM_SLOT * MAX_BATCH as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| v != "0" && !v.is_empty());
        let conv_algo = kernel_choice::from_env("DYNLOSS_CONV")?.unwrap_or_default();
        let tiling = kernel_choice::from_env::<Tiling>("DYNLOSS_TILING")?
            .unwrap_or_default()
            .resolve(info.device_type);
        Ok(Gpu(Rc::new(GpuInner {
            device,
            queue,
            info,
            families: RefCell::default(),
            pipelines: RefCell::default(),
            bind_groups: RefCell::default(),
            pool: RefCell::default(),
            rec: RefCell::default(),
            profiler: RefCell::default(),
            arena,
            next_pipeline: Cell::new(0),
            dispatches: Cell::new(0),
            submits: Cell::new(0),
            trace: flag("DYNLOSS_TRACE"),
            checked: flag("DYNLOSS_SHADER_CHECKS"),
            conv_algo: Cell::new(conv_algo),
            tiling: Cell::new(tiling),
        })))
    }

    /// The convolution algorithm in use (`DYNLOSS_CONV`, `--conv`, or auto).
    pub fn conv_algo(&self) -> ConvAlgo {
        self.0.conv_algo.get()
    }

    /// Chooses the convolution algorithm from now on.
    pub fn set_conv_algo(&self, algo: ConvAlgo) {
        self.0.conv_algo.set(algo);
    }

    /// The kernel shape matmul and the direct convolutions use (`lanes` or `workgroup`; from
    /// `DYNLOSS_TILING`, `--tiling`, or the adapter's type).
    pub fn tiling(&self) -> Tiling {
        self.0.tiling.get()
    }

    /// Chooses the kernel shape from now on (`Auto` resolves by the adapter's type).
    pub fn set_tiling(&self, tiling: Tiling) {
        self.0.tiling.set(tiling.resolve(self.0.info.device_type));
    }

    /// The adapter's identity.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.0.info
    }

    /// The wgpu device (for benchmarks and advanced use).
    pub fn device(&self) -> &wgpu::Device {
        &self.0.device
    }

    /// Counters: dispatches, submits and buffer memory.
    pub fn stats(&self) -> GpuStats {
        let pool = self.0.pool.borrow();
        GpuStats {
            dispatches: self.0.dispatches.get(),
            submits: self.0.submits.get(),
            live_bytes: pool.live_bytes,
            peak_bytes: pool.peak_bytes,
            free_bytes: pool.free_bytes,
        }
    }

    /// Starts a new peak-memory measurement from the current live bytes.
    pub fn reset_peak(&self) {
        let mut pool = self.0.pool.borrow_mut();
        pool.peak_bytes = pool.live_bytes;
    }

    /// Releases the pool's free buffers and cached bind groups.
    pub fn trim(&self) {
        self.flush();
        self.0.bind_groups.borrow_mut().clear();
        self.0.pool.borrow_mut().trim();
    }

    /// An uninitialised buffer of at least `bytes` bytes from the pool.
    pub fn alloc(&self, bytes: u64) -> Buffer {
        let (id, buf) = self.0.pool.borrow_mut().take(&self.0.device, bytes);
        Buffer {
            gpu: self.clone(),
            id,
            buf: Some(buf),
            bytes,
        }
    }

    /// A buffer of `bytes` bytes filled with zeros (ordered after pending work).
    pub fn zeros(&self, bytes: u64) -> Buffer {
        let b = self.alloc(bytes);
        self.record(
            Cmd::Clear {
                buf: b.raw().clone(),
            },
            || ("clear".into(), 0.0),
            bytes,
        );
        b
    }

    /// A buffer holding `data`.
    pub fn upload(&self, data: &[u8]) -> Buffer {
        let b = self.alloc(data.len() as u64);
        self.write(&b, data);
        b
    }

    /// Overwrites the start of `buf` with `data` (pending work that reads it runs first).
    pub fn write(&self, buf: &Buffer, data: &[u8]) {
        assert!(data.len() as u64 <= buf.bytes, "write larger than buffer");
        // A recycled buffer may still be read by recorded, unsubmitted dispatches; queue
        // writes land before the next submission, so submit those dispatches first.
        self.flush();
        let n = data.len() - data.len() % 4;
        if n > 0 {
            self.0.queue.write_buffer(buf.raw(), 0, &data[..n]);
        }
        if n < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - n].copy_from_slice(&data[n..]);
            self.0.queue.write_buffer(buf.raw(), n as u64, &tail);
        }
    }

    /// Records a copy of the first `bytes` bytes of `src` into `dst`.
    pub fn copy(&self, src: &Buffer, dst: &Buffer, bytes: u64) {
        let bytes = bytes.div_ceil(4) * 4;
        self.record(
            Cmd::Copy {
                src: src.raw().clone(),
                dst: dst.raw().clone(),
                bytes,
            },
            || ("copy".into(), 0.0),
            2 * bytes,
        );
    }

    /// Reads the first `bytes` bytes of `buf` back to the host (waits for the GPU).
    pub fn read(&self, buf: &Buffer, bytes: u64) -> Result<Vec<u8>> {
        let padded = bytes.div_ceil(4) * 4;
        if padded == 0 {
            return Ok(Vec::new());
        }
        self.flush();
        let t = std::time::Instant::now();
        let out = self.read_now(buf, padded)?;
        if let Some(p) = self.0.profiler.borrow_mut().as_mut() {
            let note = Note {
                label: "readback".into(),
                flops: 0.0,
                bytes: padded as f64,
            };
            p.add(&note, t.elapsed().as_secs_f64());
        }
        Ok(out[..bytes as usize].to_vec())
    }

    fn read_now(&self, buf: &Buffer, padded: u64) -> Result<Vec<u8>> {
        let staging = self.0.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.0.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, padded);
        self.0.queue.submit([enc.finish()]);
        self.0.submits.set(self.0.submits.get() + 1);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait("readback")?;
        rx.recv()
            .map_err(|_| Error::Device("readback callback never ran".into()))?
            .map_err(|e| Error::Device(format!("mapping readback buffer: {e}")))?;
        let out = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Device(format!("reading mapped buffer: {e:?}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }

    fn wait(&self, what: &str) -> Result<()> {
        self.0
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device(format!("waiting for {what}: {e}")))
    }

    /// Submits everything recorded so far, without waiting (while a profile is open: waits,
    /// to collect each command's time).
    pub fn flush(&self) {
        let mut rec = self.0.rec.borrow_mut();
        if rec.cmds.is_empty() {
            return;
        }
        if !rec.params.is_empty() {
            self.0.queue.write_buffer(&self.0.arena, 0, &rec.params);
        }
        let cmds = std::mem::take(&mut rec.cmds);
        rec.params.clear();
        drop(rec);
        if self.0.profiler.borrow().is_some() {
            if let Err(e) = self.flush_profiled(cmds) {
                eprintln!("profile: {e}");
            }
            return;
        }
        let mut enc = self.0.device.create_command_encoder(&Default::default());
        let mut i = 0;
        while i < cmds.len() {
            if let Cmd::Dispatch { .. } = cmds[i].cmd {
                // One compute pass for each run of consecutive dispatches.
                let mut pass = enc.begin_compute_pass(&Default::default());
                while let Some(Recorded {
                    cmd: Cmd::Dispatch { .. },
                    ..
                }) = cmds.get(i)
                {
                    encode_dispatch(&mut pass, &cmds[i].cmd);
                    i += 1;
                }
            } else {
                encode_transfer(&mut enc, &cmds[i].cmd);
                i += 1;
            }
        }
        self.submit(enc);
    }

    fn submit(&self, enc: wgpu::CommandEncoder) {
        self.0.queue.submit([enc.finish()]);
        self.0.submits.set(self.0.submits.get() + 1);
    }

    /// [`Self::flush`] with each command timed: bracketed by timestamps in one submission,
    /// or submitted alone and waited for where the adapter has no timestamps.
    fn flush_profiled(&self, cmds: Vec<Recorded>) -> Result<()> {
        let mut guard = self.0.profiler.borrow_mut();
        let prof = guard.as_mut().expect("checked by flush");
        let device = &self.0.device;
        let encode = |enc: &mut wgpu::CommandEncoder, cmd: &Cmd| match cmd {
            Cmd::Dispatch { .. } => {
                encode_dispatch(&mut enc.begin_compute_pass(&Default::default()), cmd)
            }
            _ => encode_transfer(enc, cmd),
        };
        let notes: Vec<Note> = cmds
            .iter()
            .map(|r| r.note.clone().expect("notes are recorded while profiling"))
            .collect();
        if prof.on_gpu() {
            let mut enc = device.create_command_encoder(&Default::default());
            for (i, r) in cmds.iter().enumerate() {
                prof.stamp(&mut enc, i, false);
                encode(&mut enc, &r.cmd);
                prof.stamp(&mut enc, i, true);
            }
            prof.resolve(&mut enc, cmds.len());
            self.submit(enc);
            return prof.collect(device, &notes);
        }
        self.wait("the GPU")?;
        for (r, note) in cmds.iter().zip(&notes) {
            prof.host_timed(note, || {
                let mut enc = device.create_command_encoder(&Default::default());
                encode(&mut enc, &r.cmd);
                self.submit(enc);
                self.wait("the GPU")
            })?;
        }
        Ok(())
    }

    /// Submits pending work and waits until the GPU has finished it.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.wait("the GPU")
    }

    /// Starts timing every command recorded from now on (after finishing pending work);
    /// [`Self::finish_profile`] returns the totals. With `gpu_timestamps` (and an adapter that
    /// has them) commands are timed on the GPU, else each is submitted alone and timed on the
    /// host. Slows the work it measures a little: each dispatch gets its own compute pass and
    /// each flush is waited for.
    pub fn start_profile(&self, gpu_timestamps: bool) -> Result<()> {
        self.sync()?;
        *self.0.profiler.borrow_mut() = Some(Profiler::new(
            &self.0.device,
            &self.0.queue,
            MAX_BATCH,
            gpu_timestamps,
        ));
        Ok(())
    }

    /// Finishes pending work and returns the time per kernel since [`Self::start_profile`].
    pub fn finish_profile(&self) -> Result<Profile> {
        self.sync()?;
        self.0
            .profiler
            .borrow_mut()
            .take()
            .map(Profiler::finish)
            .ok_or_else(|| Error::Device("no profile was started".into()))
    }

    fn record(&self, cmd: Cmd, label: impl FnOnce() -> (String, f64), bytes: u64) {
        let note = self.0.profiler.borrow().is_some().then(|| {
            let (label, flops) = label();
            Note {
                label,
                flops,
                bytes: bytes as f64,
            }
        });
        let full = {
            let mut rec = self.0.rec.borrow_mut();
            rec.cmds.push(Recorded { cmd, note });
            rec.cmds.len() >= MAX_BATCH
        };
        if full {
            self.flush();
        }
    }

    fn family(&self, name: &'static str) -> Result<Rc<Family>> {
        if let Some(f) = self.0.families.borrow().get(name) {
            return Ok(f.clone());
        }
        let src = shaders::source(name)
            .ok_or_else(|| Error::Device(format!("no shader family '{name}'")))?;
        let (naga_module, info) = shaders::validate(name, src).map_err(Error::Device)?;
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        let module = if self.0.checked {
            self.0.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel guards its own indices (checked by the CPU-reference tests,
            // which can be rerun with DYNLOSS_SHADER_CHECKS=1), never divides by zero and has
            // loops with finite trip counts; dropping the injected bounds checks, division
            // guards and loop counters makes inner loops markedly faster on CPU drivers.
            unsafe {
                self.0
                    .device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        let params_size = shaders::params_size(&naga_module).unwrap_or(0);
        let fam = Rc::new(Family {
            naga: naga_module,
            info,
            module,
            params_size,
        });
        self.0.families.borrow_mut().insert(name, fam.clone());
        Ok(fam)
    }

    fn pipeline<P>(&self, k: &Kernel<P>) -> Result<Rc<Pipeline>> {
        let mut key = format!("{}:{}", k.shader, k.entry);
        for (n, v) in k.constants {
            key.push_str(&format!(":{n}={v}"));
        }
        if let Some(p) = self.0.pipelines.borrow().get(&key) {
            return Ok(p.clone());
        }
        let fam = self.family(k.shader)?;
        let bindings = shaders::entry_bindings(&fam.naga, &fam.info, k.entry).ok_or_else(|| {
            Error::Device(format!("{}.wgsl has no entry '{}'", k.shader, k.entry))
        })?;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|(b, kind)| wgpu::BindGroupLayoutEntry {
                binding: *b,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        BindingKind::Params => wgpu::BufferBindingType::Uniform,
                        BindingKind::ReadOnly => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::ReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: *kind == BindingKind::Params,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let dev = &self.0.device;
        let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&key),
            entries: &entries,
        });
        let playout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&key),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: Some(&playout),
            module: &fam.module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: k.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let id = self.0.next_pipeline.get() + 1;
        self.0.next_pipeline.set(id);
        let p = Rc::new(Pipeline {
            id,
            pipeline,
            layout,
            bindings,
            params_size: fam.params_size,
        });
        self.0.pipelines.borrow_mut().insert(key, p.clone());
        Ok(p)
    }

    /// Compiles (or finds cached) the pipeline for `k` without running it.
    pub fn prepare<P: KernelParams>(&self, k: &Kernel<P>) -> Result<()> {
        self.pipeline(k).map(|_| ())
    }
}

/// Adds a dispatch command to an open compute pass.
fn encode_dispatch(pass: &mut wgpu::ComputePass, cmd: &Cmd) {
    if let Cmd::Dispatch {
        pipe,
        bind,
        offset,
        groups,
    } = cmd
    {
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, bind, &[*offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }
}

/// Adds a copy or clear command to an encoder.
fn encode_transfer(enc: &mut wgpu::CommandEncoder, cmd: &Cmd) {
    match cmd {
        Cmd::Copy { src, dst, bytes } => enc.copy_buffer_to_buffer(src, 0, dst, 0, *bytes),
        Cmd::Clear { buf } => enc.clear_buffer(buf, 0, None),
        Cmd::Dispatch { .. } => {}
    }
}

/// Workgroup counts covering `n` invocations of a 1-D kernel with `wg` threads per group,
/// folded into two dimensions when one would exceed the per-dimension limit. Kernels
/// recover the flat index as `(gid.y * num_workgroups.x + gid.x) * wg + lid.x`.
pub fn grid_1d(n: usize, wg: u32) -> [u32; 3] {
    let groups = (n as u64).div_ceil(wg as u64).max(1);
    if groups <= MAX_GROUPS as u64 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GROUPS as u64);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}
