//! NVRTC-compiled kernels through cudarc (driver and NVRTC loaded dynamically).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use crate::error::{Error, Result};
use crate::optim::{AdamWConfig, AdamWScalars};
use crate::quant::Int8Matrix;

/// CUDA C for both kernels.
///
/// `int8_gemm`: one warp per output element; lanes stride over `k` so that each warp reads its
/// two rows with coalesced loads, then reduce with shuffles. Integer arithmetic, so the result
/// equals the CPU's exactly.
///
/// `adamw_step`: one thread per parameter, the same operation order as the CPU loop
/// (`optim::adamw`), with the host-computed bias-correction scalars. `--fmad=false` keeps the
/// compiler from fusing multiply-adds, which the CPU loop does not do either.
const SRC: &str = r#"
extern "C" __global__ void int8_gemm(const signed char* a, const signed char* b, int* c,
                                     int m, int n, int k) {
    const int warps_per_block = blockDim.x / 32;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int j = blockIdx.x * warps_per_block + warp;
    const int i = blockIdx.y;
    if (i >= m || j >= n) return;
    const signed char* ar = a + (size_t)i * k;
    const signed char* br = b + (size_t)j * k;
    int acc = 0;
    for (int p = lane; p < k; p += 32) {
        acc += (int)ar[p] * (int)br[p];
    }
    for (int off = 16; off > 0; off /= 2) {
        acc += __shfl_down_sync(0xffffffffu, acc, off);
    }
    if (lane == 0) c[(size_t)i * n + j] = acc;
}

extern "C" __global__ void adamw_step(float* p, const float* g, float* m, float* v, int n,
                                      float beta1, float beta2, float eps, float decay,
                                      float step_size, float bc2_sqrt) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const float gi = g[idx];
    float pi = p[idx] * decay;
    const float mi = beta1 * m[idx] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[idx] + (1.0f - beta2) * gi * gi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    pi -= step_size * mi / denom;
    m[idx] = mi;
    v[idx] = vi;
    p[idx] = pi;
}
"#;

const GEMM_WARPS_PER_BLOCK: u32 = 4;
const ADAMW_THREADS: u32 = 256;

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

fn to_i32(x: usize, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| {
        Error::InvalidArgument(format!("{what} {x} exceeds the GPU kernel's i32 range"))
    })
}

pub(super) struct Inner {
    ordinal: usize,
    stream: Arc<CudaStream>,
    gemm: CudaFunction,
    adamw: CudaFunction,
}

impl Inner {
    pub(super) fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: these only try to dlopen the driver and NVRTC libraries; they touch no CUDA
        // state. Checking first matters: cudarc panics when a library it needs is missing.
        let (driver, nvrtc) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nvrtc::sys::is_culib_present(),
            )
        };
        if !driver {
            return Err(Error::Cuda("no CUDA driver library found".into()));
        }
        if !nvrtc {
            return Err(Error::Cuda("no NVRTC library found".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("opening the device"))?;
        let opts = cudarc::nvrtc::CompileOptions {
            fmad: Some(false),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(SRC, opts)
            .map_err(|e| Error::Cuda(format!("compiling kernels: {e}")))?;
        let module = ctx
            .load_module(ptx)
            .map_err(cuda_err("loading the module"))?;
        let gemm = module
            .load_function("int8_gemm")
            .map_err(cuda_err("int8_gemm"))?;
        let adamw = module
            .load_function("adamw_step")
            .map_err(cuda_err("adamw_step"))?;
        Ok(Inner {
            ordinal,
            stream: ctx.default_stream(),
            gemm,
            adamw,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    pub(super) fn int8_gemm(&self, a: &[i8], m: usize, b: &Int8Matrix) -> Result<Vec<i32>> {
        let (n, k) = (b.rows(), b.cols());
        let (mi, ni, ki) = (
            to_i32(m, "batch")?,
            to_i32(n, "rows")?,
            to_i32(k, "columns")?,
        );
        to_i32(m * n, "output size")?;
        if m > 65_535 {
            return Err(Error::InvalidArgument(format!(
                "batch {m} exceeds the grid's 65535 rows"
            )));
        }
        let s = &self.stream;
        let a_dev = s.clone_htod(a).map_err(cuda_err("upload activations"))?;
        let b_dev = s.clone_htod(b.data()).map_err(cuda_err("upload weights"))?;
        let mut c_dev = s
            .alloc_zeros::<i32>(m * n)
            .map_err(cuda_err("allocate output"))?;
        let cfg = LaunchConfig {
            grid_dim: ((n as u32).div_ceil(GEMM_WARPS_PER_BLOCK), m as u32, 1),
            block_dim: (32 * GEMM_WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(&self.gemm);
        launch
            .arg(&a_dev)
            .arg(&b_dev)
            .arg(&mut c_dev)
            .arg(&mi)
            .arg(&ni)
            .arg(&ki);
        // SAFETY: the argument list matches the kernel's signature (two i8 pointers, an i32
        // pointer, three ints); the buffers hold m·k, n·k and m·n elements, which is all the
        // kernel indexes given its bounds checks.
        unsafe { launch.launch(cfg) }.map_err(cuda_err("launch int8_gemm"))?;
        let c = s.clone_dtoh(&c_dev).map_err(cuda_err("download output"))?;
        // The copy is queued on the stream; wait for it before handing the buffer out.
        s.synchronize().map_err(cuda_err("synchronize"))?;
        Ok(c)
    }

    pub(super) fn adamw_step(
        &self,
        config: &AdamWConfig,
        sc: AdamWScalars,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> Result<()> {
        let n = params.len();
        let ni = to_i32(n, "parameter count")?;
        let s = &self.stream;
        let mut p_dev = s.clone_htod(params).map_err(cuda_err("upload params"))?;
        let g_dev = s.clone_htod(grads).map_err(cuda_err("upload grads"))?;
        let mut m_dev = s.clone_htod(m).map_err(cuda_err("upload m"))?;
        let mut v_dev = s.clone_htod(v).map_err(cuda_err("upload v"))?;
        let cfg = LaunchConfig {
            grid_dim: ((n as u32).div_ceil(ADAMW_THREADS), 1, 1),
            block_dim: (ADAMW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(&self.adamw);
        launch
            .arg(&mut p_dev)
            .arg(&g_dev)
            .arg(&mut m_dev)
            .arg(&mut v_dev)
            .arg(&ni)
            .arg(&config.beta1)
            .arg(&config.beta2)
            .arg(&config.eps)
            .arg(&sc.decay)
            .arg(&sc.step_size)
            .arg(&sc.bc2_sqrt);
        // SAFETY: the arguments match the kernel's signature (four f32 pointers, an int, six
        // floats); every buffer holds n elements and the kernel checks idx < n.
        unsafe { launch.launch(cfg) }.map_err(cuda_err("launch adamw_step"))?;
        s.memcpy_dtoh(&p_dev, params)
            .map_err(cuda_err("download params"))?;
        s.memcpy_dtoh(&m_dev, m).map_err(cuda_err("download m"))?;
        s.memcpy_dtoh(&v_dev, v).map_err(cuda_err("download v"))?;
        s.synchronize().map_err(cuda_err("synchronize"))
    }
}
