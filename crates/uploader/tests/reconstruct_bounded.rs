//! A chunk object that decodes to far more than the recipe's chunk size is refused while
//! decoding, with no more memory than the chunk: a 1 MB chunk whose object is a small
//! frame of 2 GiB of zeros. Every allocation of this test binary is counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chunk_model::{Codec, Recipe, RecipeChunk, Sha256Digest, object_keys};
use gpu_compress::{CodecChoice, CompressError, Compressor, CompressorConfig, EngineChoice};
use uploader::{
    LocalDir, ObjectMeta, ObjectStore, ReconstructError, ReconstructOptions, Which, reconstruct,
    verify,
};

/// The system allocator, counting the bytes live and the most ever live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A moving realloc holds the old and the new block at once: count both.
        PEAK.fetch_max(LIVE.load(Ordering::SeqCst) + new_size, Ordering::SeqCst);
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The chunk size the recipe names.
const CHUNK: usize = 1_000_000;
/// What the object really holds.
const HUGE: u64 = 2 << 30;
/// Room for what else a verification holds beside the object it reads (runtime, recipe,
/// the 1 MB chunk buffer): a few MiB, against the 2 GiB the frame expands to.
const ALLOWED_PEAK: usize = 4 << 20;

fn no_progress<T>(_: T) {}

/// A frame of `HUGE` zero bytes, streamed through the compressor.
fn bomb(codec: Codec) -> Vec<u8> {
    let compressor = Compressor::new(CompressorConfig {
        codec: CodecChoice::Fixed(codec),
        level: Some(1),
        engine: EngineChoice::Cpu,
        verify: false,
    })
    .unwrap();
    let mut frame = Vec::new();
    compressor
        .compress_stream(std::io::repeat(0).take(HUGE), HUGE, &mut frame)
        .unwrap();
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_expands_past_its_chunk_is_refused_without_taking_the_memory() {
    let work = tempfile::tempdir().unwrap();
    let store = LocalDir::new(work.path().join("bucket")).unwrap();
    // The recipe's file is one chunk of 1 MB of zeros; its object claims that content.
    let content = vec![0u8; CHUNK];
    let sha = Sha256Digest::of(&content);
    drop(content);
    for codec in [Codec::Zstd, Codec::Lz4] {
        let name = format!("bomb-{codec}");
        let frame = bomb(codec);
        let frame_len = frame.len();
        assert!(frame_len < 16 << 20, "{codec}: {frame_len} bytes");
        let key = object_keys::chunk_object(&sha, codec);
        let meta = ObjectMeta {
            codec,
            original_size: CHUNK as u64,
            original_sha256: sha,
        };
        store.put(&key, Bytes::from(frame), &meta).await.unwrap();
        let recipe = Recipe {
            version: Recipe::VERSION,
            name: name.clone(),
            file_size: CHUNK as u64,
            file_sha256: sha,
            chunks: vec![RecipeChunk {
                offset: 0,
                size: CHUNK as u64,
                sha256: sha,
                key: key.clone(),
                codec,
            }],
        };
        let json = serde_json::to_vec(&recipe).unwrap();
        let meta = ObjectMeta::plain(&json);
        store
            .put(&object_keys::recipe(&name, &sha), Bytes::from(json), &meta)
            .await
            .unwrap();

        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let err = verify(
            &store,
            &name,
            Which::Newest,
            &ReconstructOptions::default(),
            &no_progress,
        )
        .await
        .unwrap_err();
        let peak = PEAK.load(Ordering::SeqCst) - before;
        match &err {
            ReconstructError::ChunkDecode {
                index: 0,
                key: k,
                source: CompressError::OutputLimit { limit, .. },
            } => {
                assert_eq!((k, *limit), (&key, CHUNK as u64));
            }
            other => panic!("{codec}: {other}"),
        }
        assert!(err.to_string().contains("1000000"), "{err}");
        assert!(
            peak < frame_len + ALLOWED_PEAK,
            "{codec}: verifying a {frame_len}-byte object took {peak} bytes at the peak"
        );

        // Rebuilding refuses it the same way and writes nothing.
        let out = work.path().join(format!("{name}.out"));
        let err = reconstruct(
            &store,
            &name,
            Which::Newest,
            &out,
            &ReconstructOptions::default(),
            &no_progress,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, ReconstructError::ChunkDecode { .. }),
            "{codec}: {err}"
        );
        assert!(!out.exists());
    }
}
