//! The chunker on inputs that start as ebml files: parser, packing and cuts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    panini_fuzz::plan_all_strategies(&panini_fuzz::with_magic(&[0x1A, 0x45, 0xDF, 0xA3], 0, data));
});
