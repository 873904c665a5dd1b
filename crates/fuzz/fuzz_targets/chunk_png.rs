//! The chunker on inputs that start as png files: parser, packing and cuts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    panini_fuzz::plan_all_strategies(&panini_fuzz::with_magic(b"\\x89PNG\\r\\n\\x1a\\n", 0, data));
});
