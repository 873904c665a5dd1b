//! The chunker on inputs that start as pdf files: parser, packing and cuts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    panini_fuzz::plan_all_strategies(&panini_fuzz::with_magic(b"%PDF-", 0, data));
});
