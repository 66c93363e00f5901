//! The CPU kernels against references (dfdx, PyTorch fixtures, the MiniLM reference), checkpoints,
//! inference, quantisation, tokenizers, metrics, and the GPU kernels' parity. One test binary,
//! one module per area.

mod checkpoint;
mod common;
mod gpu;
mod infer;
mod metrics;
mod minilm;
mod models_grad;
mod models_train;
mod ops_kernels;
mod optim;
mod quant;
mod tokenize;
