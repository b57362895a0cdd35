//! Recording one dispatch: the checks that turn a caller's mistake into an error naming the
//! kernel (instead of a panic inside wgpu or wrong numbers), the bind-group cache, the
//! parameter arena and tracing. Each step is one function; `dispatch_noted` lists them in order.

use std::rc::Rc;

use super::shaders::BindingKind;
use super::{Buffer, Cmd, Gpu, Kernel, KernelParams, MAX_GROUPS, PARAM_SLOT, Pipeline};
use crate::error::{Error, Result};

/// Cached bind groups above which the cache starts over (entries of buffers since released
/// would otherwise pile up).
const MAX_BIND_GROUPS: usize = 8192;

impl Gpu {
    /// Records one dispatch of `k` with `params` (binding 0) and `buffers` bound, in order, to
    /// the entry point's storage bindings.
    pub fn dispatch<P: KernelParams>(
        &self,
        k: &Kernel<P>,
        params: &P,
        buffers: &[&Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_noted(k, params, buffers, groups, || {
            (format!("{} {}", k.shader, k.entry), 0.0)
        })
    }

    /// [`Self::dispatch`] with what a profile should call it: `note` gives the label and the
    /// floating-point operations, and runs only while a profile is open.
    pub fn dispatch_noted<P: KernelParams>(
        &self,
        k: &Kernel<P>,
        params: &P,
        buffers: &[&Buffer],
        groups: [u32; 3],
        note: impl FnOnce() -> (String, f64),
    ) -> Result<()> {
        // An empty grid is a kernel over nothing (an empty tensor): there is no work to record.
        if groups.contains(&0) {
            return Ok(());
        }
        check_group_counts(k, groups)?;
        let pipe = self.pipeline(k)?;
        check_buffer_count(k, &pipe, buffers)?;
        self.check_binding_sizes(k, buffers)?;
        check_params_size(k, &pipe)?;
        self.check_same_device(k, buffers)?;
        let bind = self.bind_group(&pipe, buffers);
        self.trace_dispatch(k, params, groups);
        let offset = self.push_params(params);
        self.0.dispatches.set(self.0.dispatches.get() + 1);
        let bound: u64 = buffers.iter().map(|b| b.bytes).sum();
        self.record(
            Cmd::Dispatch {
                pipe,
                bind,
                offset,
                groups,
            },
            note,
            bound,
        );
        if self.0.trace {
            // Submit each dispatch alone so a validation error points at it.
            self.flush();
        }
        Ok(())
    }

    /// Refuses a buffer above the device's storage binding limit: wgpu's bind-group validation
    /// would panic on it; this says which kernel and how large instead.
    fn check_binding_sizes<P>(&self, k: &Kernel<P>, buffers: &[&Buffer]) -> Result<()> {
        let limit = self.0.device.limits().max_storage_buffer_binding_size;
        let Some(b) = buffers.iter().find(|b| b.raw().size() > limit) else {
            return Ok(());
        };
        Err(Error::Device(format!(
            "{}:{} would bind a {:.1} MiB buffer (a {}-byte tensor), above this device's \
             {:.1} MiB storage binding limit (max_storage_buffer_binding_size); use a \
             smaller batch size or image size",
            k.shader,
            k.entry,
            b.raw().size() as f64 / (1 << 20) as f64,
            b.bytes,
            limit as f64 / (1 << 20) as f64
        )))
    }

    /// Refuses a buffer created on another `Gpu`: wgpu would reject it inside a later submit.
    fn check_same_device<P>(&self, k: &Kernel<P>, buffers: &[&Buffer]) -> Result<()> {
        match buffers.iter().find(|b| !Rc::ptr_eq(&b.gpu.0, &self.0)) {
            Some(b) => Err(Error::Device(format!(
                "{}:{} was given buffer #{} of another device",
                k.shader, k.entry, b.id
            ))),
            None => Ok(()),
        }
    }

    /// The bind group of `pipe` with `buffers`, from the cache (keyed by pipeline and buffer
    /// ids) or created and cached: the same tensors meet the same kernel every step.
    fn bind_group(&self, pipe: &Pipeline, buffers: &[&Buffer]) -> wgpu::BindGroup {
        let mut cache = self.0.bind_groups.borrow_mut();
        if cache.len() > MAX_BIND_GROUPS {
            cache.clear();
        }
        let ids = buffers.iter().map(|b| b.id).collect();
        cache
            .entry((pipe.id, ids))
            .or_insert_with(|| self.create_bind_group(pipe, buffers))
            .clone()
    }

    /// A new bind group: the parameter arena's slot at binding 0's place (offset given per
    /// dispatch), `buffers` in order at the storage bindings.
    fn create_bind_group(&self, pipe: &Pipeline, buffers: &[&Buffer]) -> wgpu::BindGroup {
        let mut storage = buffers.iter();
        let entries: Vec<wgpu::BindGroupEntry> = pipe
            .bindings
            .iter()
            .map(|(b, kind)| {
                let resource = if *kind == BindingKind::Params {
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.0.arena,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAM_SLOT),
                    })
                } else {
                    let buf = storage.next().expect("counted by check_buffer_count");
                    buf.raw().as_entire_binding()
                };
                wgpu::BindGroupEntry {
                    binding: *b,
                    resource,
                }
            })
            .collect();
        self.0.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        })
    }

    /// With `DYNLOSS_TRACE`, prints the dispatch before it is recorded.
    fn trace_dispatch<P: KernelParams>(&self, k: &Kernel<P>, params: &P, groups: [u32; 3]) {
        if self.0.trace {
            eprintln!(
                "[dispatch] {}:{} {:?} groups={:?} params={:?}",
                k.shader, k.entry, k.constants, groups, params
            );
        }
    }

    /// Appends `params` to the parameter arena in a slot of its own (written at the next
    /// flush) and returns the slot's byte offset, the bind group's dynamic offset.
    fn push_params<P: KernelParams>(&self, params: &P) -> u32 {
        let mut rec = self.0.rec.borrow_mut();
        let off = rec.params.len();
        rec.params.extend_from_slice(bytemuck::bytes_of(params));
        rec.params.resize(off + PARAM_SLOT as usize, 0);
        off as u32
    }
}

/// Refuses a grid above the per-dimension workgroup limit every adapter supports.
fn check_group_counts<P>(k: &Kernel<P>, groups: [u32; 3]) -> Result<()> {
    if groups.iter().any(|&g| g > MAX_GROUPS) {
        return Err(Error::Device(format!(
            "{}:{} dispatch {:?} exceeds {MAX_GROUPS} workgroups per dimension",
            k.shader, k.entry, groups
        )));
    }
    Ok(())
}

/// Refuses a buffer list whose length differs from the entry point's storage bindings.
fn check_buffer_count<P>(k: &Kernel<P>, pipe: &Pipeline, buffers: &[&Buffer]) -> Result<()> {
    let storage = pipe
        .bindings
        .iter()
        .filter(|(_, kind)| *kind != BindingKind::Params)
        .count();
    if storage != buffers.len() {
        return Err(Error::Device(format!(
            "{}:{} binds {} storage buffers, {} given",
            k.shader,
            k.entry,
            storage,
            buffers.len()
        )));
    }
    Ok(())
}

/// Refuses a host parameter struct whose size differs from the WGSL one (a struct that drifted
/// from the shader would feed the kernel shifted fields); panics if it outgrows an arena slot.
fn check_params_size<P: KernelParams>(k: &Kernel<P>, pipe: &Pipeline) -> Result<()> {
    if pipe.params_size as usize != size_of::<P>() {
        return Err(Error::Device(format!(
            "{}:{} takes a {}-byte parameter struct, {} has {} bytes",
            k.shader,
            k.entry,
            pipe.params_size,
            P::NAME,
            size_of::<P>()
        )));
    }
    assert!(
        size_of::<P>() <= PARAM_SLOT as usize,
        "parameters exceed one arena slot"
    );
    Ok(())
}
