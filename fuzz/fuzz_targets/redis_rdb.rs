#![no_main]
backup_fuzz::fuzz_main!("redis_rdb");
