//! `cargo bench`: the kernel table (same as `dynloss-wgpu bench kernels`).
//! Set DYNLOSS_BENCH_QUICK=1 for small sizes.

use dynloss_wgpu::Gpu;
use dynloss_wgpu::bench::{KernelBench, format_table, run_kernels};

fn main() {
    // cargo passes `--bench`; nothing else to parse.
    let gpu = Gpu::default_device().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let cfg = if std::env::var("DYNLOSS_BENCH_QUICK").is_ok_and(|v| v != "0") {
        KernelBench::quick()
    } else {
        KernelBench::full()
    };
    match run_kernels(&gpu, &cfg) {
        Ok(rows) => print!("{}", format_table(&gpu, &rows)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
