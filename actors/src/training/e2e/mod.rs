//! Distributed training in one process: two `ParamServer` shards and three `Trainer`s train a
//! logistic regression (analytic gradient) on a generated data set, in sync, async and ssp
//! modes; sync follows a single-process run with the same seed and global batch; a trainer
//! killed mid-epoch loses and repeats no sample; a checkpointed job resumes exactly.

mod harness;
mod modes;
mod resume;
