//! Regression tests of issue 28 ("Point-in-time recovery and drills as an
//! operator meets them"): what trying the README as a new user found.
//! Each test names the items of the issue it reproduces.

mod pitr;
