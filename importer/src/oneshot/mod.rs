//! One-shot imports: drain the queues in linear or parallel mode and report
//! HP Norton's figures (`run`), or feed the same writers straight from CSV
//! files with no broker, which the benchmark uses to price the queue
//! (`direct`). A run outlives any one broker connection (`session`).

pub mod direct;
pub mod run;
mod session;
