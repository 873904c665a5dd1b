//! `EngineChoice::Auto`: OpenCL only on a GPU (or the device `PANINI_OPENCL_DEVICE`
//! names), else the CPU engine with the reason, in the same words `--engine opencl`
//! fails with when there is no usable device. Checked against what the machine has, as
//! `opencl::device()` and an explicit `EngineChoice::OpenCl` see it: without OpenCL
//! the fallback branch runs, with PoCL (CI) the "CPU implementation" branch (where no
//! GPU device node exists, the drivers are not even loaded), on a GPU machine the OpenCL
//! branch. Whichever ran, the frames are standard: stock `lz4 -d` decodes them.

mod common;

use gpu_compress::{
    Codec, CodecChoice, CompressError, Compressor, CompressorConfig, Engine, EngineChoice, opencl,
};

fn build(engine: EngineChoice, codec: CodecChoice) -> Result<Compressor, CompressError> {
    Compressor::new(CompressorConfig {
        codec,
        engine,
        verify: true,
        ..Default::default()
    })
}

#[test]
fn auto_takes_opencl_only_when_it_is_worth_it_and_else_says_why() {
    let explicit = build(EngineChoice::OpenCl, CodecChoice::Auto);
    let auto = build(EngineChoice::Auto, CodecChoice::Auto).expect("auto always builds");
    let chosen_by_env = std::env::var_os(opencl::DEVICE_ENV).is_some_and(|v| !v.is_empty());
    match explicit {
        Err(CompressError::OpenClUnavailable(reason)) => {
            assert!(opencl::device().is_err(), "no device, yet: {reason}");
            assert_eq!(auto.engine(), Engine::Cpu);
            assert_eq!(
                auto.engine_note(),
                Some(reason.as_str()),
                "auto falls back with the reason --engine opencl fails with"
            );
            assert!(auto.device().starts_with("cpu"), "{}", auto.device());
        }
        Err(other) => panic!("--engine opencl failed with an unexpected error: {other}"),
        Ok(explicit) => {
            assert_eq!(explicit.engine(), Engine::OpenCl);
            let device = opencl::device().expect("the device the engine runs on");
            if device.is_gpu || chosen_by_env {
                assert_eq!(auto.engine(), Engine::OpenCl, "{device:?}");
                assert_eq!(auto.engine_note(), None);
                assert_eq!(auto.device(), explicit.device());
            } else {
                // A CPU implementation (PoCL) is slower than the native CPU engine; on a
                // machine without a GPU device node the drivers are not even loaded.
                assert_eq!(auto.engine(), Engine::Cpu, "{device:?}");
                let note = auto.engine_note().expect("auto says why it took the CPU");
                assert!(
                    (note.contains(&device.name) || note.contains("no GPU device node"))
                        && note.contains(opencl::DEVICE_ENV),
                    "{note}"
                );
            }
        }
    }
}

#[test]
fn auto_engine_frames_are_standard_lz4_from_the_engine_it_reports() {
    let auto = build(EngineChoice::Auto, CodecChoice::Fixed(Codec::Lz4)).unwrap();
    let data = common::text(300_000);
    let single = auto.compress(&data).unwrap();
    assert_eq!(single.codec, Codec::Lz4);
    assert_eq!(single.stats.engine, auto.engine());
    assert!(single.stats.verified);
    assert_eq!(common::run_cli("lz4", &["-d", "-c"], &single.bytes), data);

    let other = common::random(70_000, 5);
    let batch = auto.compress_batch(&[&data, &other]).unwrap();
    for (frame, input) in batch.iter().zip([&data, &other]) {
        assert_eq!(frame.stats.engine, auto.engine());
        assert_eq!(&common::run_cli("lz4", &["-d", "-c"], &frame.bytes), input);
    }
}

#[test]
fn an_explicit_cpu_choice_is_never_second_guessed() {
    let cpu = build(EngineChoice::Cpu, CodecChoice::Auto).unwrap();
    assert_eq!(cpu.engine(), Engine::Cpu);
    assert_eq!(cpu.engine_note(), None, "nothing to explain");
}
