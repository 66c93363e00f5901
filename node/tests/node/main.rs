//! The `flotilla` binary and the node library end to end: the CLI's commands, daemon processes
//! (signals, crash loops, SIGSTOP), mDNS between network namespaces, and training on the
//! kernels. One test binary, one module per area.

mod cli;
mod cli_data;
mod cli_jobs;
mod cli_serving;
mod cli_train;
mod common;
mod crash_loop;
mod layering;
mod lifecycle;
mod mdns;
mod sigstop;
mod train_kernels;
