#![no_main]
backup_fuzz::fuzz_main!("pg_manifest");
