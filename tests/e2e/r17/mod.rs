//! Regression tests of issue 17 ("Fidelity on real-world data"): what
//! PostgreSQL's regression database, Redis's own RDB files and MongoDB's
//! corpora broke. Each test names the item of the issue it reproduces.

mod cli;
mod mongo;
mod postgres;
mod redis;
