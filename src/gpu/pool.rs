//! A buffer pool: freed storage buffers are kept by size class and handed out again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer ids are unique across devices, so no cache keyed by them can mix two devices up.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Usage of every pooled buffer: kernels read and write it, copies move it.
pub const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// The size class a request of `bytes` is served from: 4 steps per power of two, so at most
/// 25% of a buffer is slack while nearby sizes still share buffers.
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let top = 63 - b.leading_zeros() as u64; // 2^top <= b
    if top < 2 {
        return 256;
    }
    let step = 1u64 << (top - 2);
    b.div_ceil(step) * step
}

/// Free buffers by size class, plus live/peak byte counters.
#[derive(Default)]
pub struct BufferPool {
    free: HashMap<u64, Vec<(u64, wgpu::Buffer)>>,
    /// Bytes held by buffers handed out and not yet returned.
    pub live_bytes: u64,
    /// The highest `live_bytes` seen since the last reset.
    pub peak_bytes: u64,
    /// Bytes held by buffers waiting in the free lists.
    pub free_bytes: u64,
}

impl BufferPool {
    /// A buffer of at least `bytes` bytes, recycled when one is free. Returns (id, buffer);
    /// the id stays with the buffer for its whole life, so bind groups can be cached by it.
    pub fn take(&mut self, device: &wgpu::Device, bytes: u64) -> (u64, wgpu::Buffer) {
        let class = size_class(bytes);
        let entry = match self.free.get_mut(&class).and_then(|v| v.pop()) {
            Some(e) => {
                self.free_bytes -= class;
                e
            }
            None => {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let buf = device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: class,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                });
                (id, buf)
            }
        };
        self.live_bytes += class;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        entry
    }

    /// Returns a buffer to its size class.
    pub fn give(&mut self, id: u64, buf: wgpu::Buffer) {
        let class = buf.size();
        self.live_bytes -= class;
        self.free_bytes += class;
        self.free.entry(class).or_default().push((id, buf));
    }

    /// Drops every free buffer (their memory goes back to the driver).
    pub fn trim(&mut self) {
        self.free.clear();
        self.free_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_bounded_slack() {
        for bytes in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            5000,
            1 << 20,
            (1 << 20) + 1,
            12345678,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c.is_multiple_of(4));
            if bytes > 256 {
                assert!((c as f64) < bytes as f64 * 1.26, "{bytes} -> {c}");
            }
        }
        assert_eq!(size_class(1000), size_class(1001));
    }
}
