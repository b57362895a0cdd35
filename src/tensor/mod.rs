//! GPU tensors (a shape plus a pooled buffer) and the op functions that launch kernels.
//! Ops never mutate their inputs, except the optimizer updates, which say so.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod finite;
pub mod index;
pub mod kernels;
pub mod matmul;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod sort;
pub mod winograd;

use std::rc::Rc;

use crate::error::{Error, Result, shape_err};
use crate::gpu::{Buffer, Gpu, Kernel, KernelParams, ParamLayout};

/// Every kernel parameter struct the launchers bind, one per shader family; the tests check
/// each against naga's layout of the WGSL struct it mirrors.
pub const PARAM_STRUCTS: &[ParamLayout] = &[
    ParamLayout::of::<batchnorm::BatchNormParams>(),
    ParamLayout::of::<conv::ConvParams>(),
    ParamLayout::of::<elementwise::ElementwiseParams>(),
    ParamLayout::of::<finite::FiniteParams>(),
    ParamLayout::of::<index::IndexParams>(),
    ParamLayout::of::<matmul::MatmulParams>(),
    ParamLayout::of::<optim::OptimParams>(),
    ParamLayout::of::<pool::PoolParams>(),
    ParamLayout::of::<reduce::ReduceParams>(),
    ParamLayout::of::<softmax::SoftmaxParams>(),
    ParamLayout::of::<sort::SortParams>(),
    ParamLayout::of::<winograd::WinogradParams>(),
];

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float: activations, weights, gradients.
    F32,
    /// 32-bit unsigned integer: labels and indices.
    U32,
}

/// An n-dimensional array on the GPU, row-major and contiguous. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    buf: Rc<Buffer>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.dtype)
    }
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    fn with_buffer(shape: &[usize], dtype: DType, buf: Buffer) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            dtype,
            buf: Rc::new(buf),
        }
    }

    /// An uninitialised tensor (every element is written by the kernel that fills it).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Tensor {
        let bytes = (numel_of(shape) * 4) as u64;
        Self::with_buffer(shape, dtype, gpu.alloc(bytes))
    }

    /// A tensor of zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize], dtype: DType) -> Tensor {
        let bytes = (numel_of(shape) * 4) as u64;
        Self::with_buffer(shape, dtype, gpu.zeros(bytes))
    }

    /// Uploads f32 data; `data.len()` must equal the product of `shape`.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Self::from_pod("from_f32", gpu, shape, DType::F32, data)
    }

    /// Uploads u32 data (labels, indices).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Self::from_pod("from_u32", gpu, shape, DType::U32, data)
    }

    fn from_pod<T: bytemuck::Pod>(
        op: &'static str,
        gpu: &Gpu,
        shape: &[usize],
        dtype: DType,
        data: &[T],
    ) -> Result<Tensor> {
        if numel_of(shape) != data.len() {
            return Err(shape_err(
                op,
                format!(
                    "shape {shape:?} needs {} values, got {}",
                    numel_of(shape),
                    data.len()
                ),
            ));
        }
        Ok(Self::with_buffer(
            shape,
            dtype,
            gpu.upload(bytemuck::cast_slice(data)),
        ))
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Tensor {
        let t = Tensor::empty(gpu, shape, DType::F32);
        elementwise::fill(&t, value).expect("fill of a fresh f32 tensor");
        t
    }

    /// Reads the values back (waits for the GPU).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        self.expect_dtype("to_f32_vec", DType::F32)?;
        let bytes = self.gpu().read(&self.buf, (self.numel() * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads u32 values back (waits for the GPU).
    pub fn to_u32_vec(&self) -> Result<Vec<u32>> {
        self.expect_dtype("to_u32_vec", DType::U32)?;
        let bytes = self.gpu().read(&self.buf, (self.numel() * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads a one-element f32 tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(shape_err(
                "item",
                format!("shape {:?} is not a scalar", self.shape),
            ));
        }
        Ok(self.to_f32_vec()?[0])
    }

    /// Overwrites the contents with `data` (same length).
    pub fn write_f32(&self, data: &[f32]) -> Result<()> {
        self.expect_dtype("write_f32", DType::F32)?;
        if data.len() != self.numel() {
            return Err(shape_err(
                "write_f32",
                format!("{} values for shape {:?}", data.len(), self.shape),
            ));
        }
        self.gpu().write(&self.buf, bytemuck::cast_slice(data));
        Ok(())
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel_of(shape) != self.numel() {
            return Err(shape_err(
                "reshape",
                format!("cannot view {:?} as {:?}", self.shape, shape),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype: self.dtype,
            buf: self.buf.clone(),
        })
    }

    /// A new tensor with a copy of the data.
    pub fn deep_clone(&self) -> Tensor {
        let out = Tensor::empty(self.gpu(), &self.shape, self.dtype);
        self.gpu()
            .copy(&self.buf, &out.buf, (self.numel() * 4) as u64);
        out
    }

    /// Copies `src`'s data into this tensor (same element count), ordered with other work.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.numel() != self.numel() || src.dtype != self.dtype {
            return Err(shape_err("copy_from", format!("{:?} into {:?}", src, self)));
        }
        self.gpu()
            .copy(&src.buf, &self.buf, (self.numel() * 4) as u64);
        Ok(())
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        numel_of(&self.shape)
    }

    /// The GPU the tensor lives on.
    pub fn gpu(&self) -> &Gpu {
        self.buf.gpu()
    }

    /// The underlying buffer (for kernel launches).
    pub fn buffer(&self) -> &Buffer {
        &self.buf
    }

    /// True when both handles share one buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.buf, &other.buf)
    }

    /// Fails unless the tensor has element type `dt`.
    pub fn expect_dtype(&self, op: &'static str, dt: DType) -> Result<()> {
        if self.dtype != dt {
            return Err(shape_err(
                op,
                format!("expected {dt:?}, got {:?}", self.dtype),
            ));
        }
        Ok(())
    }

    /// Fails unless the tensor has rank `r`; returns the shape.
    pub fn expect_rank(&self, op: &'static str, r: usize) -> Result<&[usize]> {
        if self.shape.len() != r {
            return Err(shape_err(
                op,
                format!("expected rank {r}, got shape {:?}", self.shape),
            ));
        }
        Ok(&self.shape)
    }
}

/// Records kernel `k` with parameters `p`, binding the tensors' buffers in order.
fn launch<P: KernelParams>(
    k: &Kernel<P>,
    p: &P,
    tensors: &[&Tensor],
    groups: [u32; 3],
) -> Result<()> {
    kernels::check(k)?;
    let bufs: Vec<&Buffer> = tensors.iter().map(|t| t.buffer()).collect();
    tensors[0].gpu().dispatch(k, p, &bufs, groups)
}

/// [`launch`] with a label and operation count for profiles (see [`crate::gpu::Profile`]).
fn launch_noted<P: KernelParams>(
    k: &Kernel<P>,
    p: &P,
    tensors: &[&Tensor],
    groups: [u32; 3],
    note: impl FnOnce() -> (String, f64),
) -> Result<()> {
    kernels::check(k)?;
    let bufs: Vec<&Buffer> = tensors.iter().map(|t| t.buffer()).collect();
    tensors[0].gpu().dispatch_noted(k, p, &bufs, groups, note)
}

/// Checks that a size fits the u32 indices kernels use.
pub fn fits_u32(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| shape_err(op, format!("{n} elements exceed u32 indexing")))
}

/// Fails with a shape error unless `cond` holds.
pub fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape { op, msg: msg() })
    }
}
