//! Segmented bitonic sort of (segment, key, value) triples and per-segment rank bins: the
//! per-class loss ranking of the Dynamic Loss method.

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::{Result, shape_err};
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/sort.wgsl.
    pub(crate) struct SortParams for sort::Params {
        n: u32,        // real elements
        m: u32,        // padded element count, a power of two >= 512
        k: u32,        // bitonic stage (local_merge, global_step)
        j: u32,        // step within the stage (global_step)
        segments: u32, // rank_bins: entries in seg_start / seg_len
        bins: u32,     // rank_bins: number of bins R
    }
}

const PACK: Kernel<'static, SortParams> = Kernel::new("pack");
const LOCAL_SORT: Kernel<'static, SortParams> = Kernel::new("local_sort");
const LOCAL_MERGE: Kernel<'static, SortParams> = Kernel::new("local_merge");
const GLOBAL_STEP: Kernel<'static, SortParams> = Kernel::new("global_step");
const UNPACK: Kernel<'static, SortParams> = Kernel::new("unpack");
const RANK_BINS: Kernel<'static, SortParams> = Kernel::new("rank_bins");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [
        PACK,
        LOCAL_SORT,
        LOCAL_MERGE,
        GLOBAL_STEP,
        UNPACK,
        RANK_BINS,
    ]
    .iter()
    .map(KernelVariant::of)
    .collect()
}

/// Elements one workgroup sorts in shared memory.
const BLOCK: usize = 512;

/// The three columns of a sorted sequence, in (segment, key, value) ascending order.
#[derive(Debug, Clone)]
pub struct SortResult {
    /// Segment ids, u32 [n], ascending.
    pub segment: Tensor,
    /// Keys, f32 [n], ascending within each segment (NaN last, -0 before +0).
    pub key: Tensor,
    /// Values, u32 [n], ascending among equal (segment, key).
    pub value: Tensor,
}

/// Sorts (segment u32 [n], key f32 [n], value u32 [n]) by (segment, key, value) ascending.
pub fn segmented_sort(segment: &Tensor, key: &Tensor, value: &Tensor) -> Result<SortResult> {
    const OP: &str = "segmented_sort";
    segment.expect_dtype(OP, DType::U32)?;
    key.expect_dtype(OP, DType::F32)?;
    value.expect_dtype(OP, DType::U32)?;
    let n = segment.expect_rank(OP, 1)?[0];
    ensure(key.shape() == [n] && value.shape() == [n], OP, || {
        format!(
            "segment {:?}, key {:?} and value {:?} must all be [n]",
            segment.shape(),
            key.shape(),
            value.shape()
        )
    })?;
    let gpu = segment.gpu();
    let out = SortResult {
        segment: Tensor::empty(gpu, &[n], DType::U32),
        key: Tensor::empty(gpu, &[n], DType::F32),
        value: Tensor::empty(gpu, &[n], DType::U32),
    };
    if n == 0 {
        return Ok(out);
    }
    let m = n.next_power_of_two().max(BLOCK);
    let limit = gpu.device().limits().max_storage_buffer_binding_size;
    if (m as u64) * 16 > limit || m > 1 << 31 {
        return Err(shape_err(
            OP,
            format!(
                "{n} elements need a {m} x 16-byte scratch buffer, over the {limit}-byte limit"
            ),
        ));
    }
    let (n32, m32) = (fits_u32(OP, n)?, m as u32);
    let elems = Tensor::empty(gpu, &[m, 4], DType::U32);
    let params = |k: u32, j: u32| SortParams {
        n: n32,
        m: m32,
        k,
        j,
        ..Default::default()
    };
    let blocks = grid_1d(m / BLOCK, 1);

    launch(
        &PACK,
        &params(0, 0),
        &[segment, key, value, &elems],
        grid_1d(m, 256),
    )?;
    launch(&LOCAL_SORT, &params(0, 0), &[&elems], blocks)?;
    let mut k = 2 * BLOCK;
    while k <= m {
        let mut j = k / 2;
        while j >= BLOCK {
            launch(
                &GLOBAL_STEP,
                &params(k as u32, j as u32),
                &[&elems],
                grid_1d(m / 2, 256),
            )?;
            j /= 2;
        }
        launch(&LOCAL_MERGE, &params(k as u32, 0), &[&elems], blocks)?;
        k *= 2;
    }
    launch(
        &UNPACK,
        &params(0, 0),
        &[&elems, &out.segment, &out.key, &out.value],
        grid_1d(n, 256),
    )?;
    Ok(out)
}

/// Rank bin `(k * bins) / (len_s + 1)` of each sorted element at position k of its segment s.
///
/// `sorted_segment` (u32 [n]) is [`SortResult::segment`]; `segment_start` and `segment_len`
/// (u32 [S]) give each segment's first position and length in it. Elements whose segment id,
/// length or position disagrees with those get `u32::MAX`.
pub fn rank_bins(
    sorted_segment: &Tensor,
    segment_start: &Tensor,
    segment_len: &Tensor,
    bins: u32,
) -> Result<Tensor> {
    const OP: &str = "rank_bins";
    sorted_segment.expect_dtype(OP, DType::U32)?;
    segment_start.expect_dtype(OP, DType::U32)?;
    segment_len.expect_dtype(OP, DType::U32)?;
    let n = sorted_segment.expect_rank(OP, 1)?[0];
    let s = segment_start.expect_rank(OP, 1)?[0];
    ensure(segment_len.shape() == [s], OP, || {
        format!(
            "segment_start {:?} and segment_len {:?} differ",
            segment_start.shape(),
            segment_len.shape()
        )
    })?;
    ensure(bins > 0, OP, || "bins must be positive".into())?;
    ensure((n as u64) * (bins as u64) <= u32::MAX as u64, OP, || {
        format!("{n} elements x {bins} bins overflow the kernel's u32 arithmetic")
    })?;
    let gpu = sorted_segment.gpu();
    let out = Tensor::empty(gpu, &[n], DType::U32);
    if n == 0 {
        return Ok(out);
    }
    let p = SortParams {
        n: n as u32,
        segments: fits_u32(OP, s)?,
        bins,
        ..Default::default()
    };
    launch(
        &RANK_BINS,
        &p,
        &[sorted_segment, segment_start, segment_len, &out],
        grid_1d(n, 256),
    )?;
    Ok(out)
}
