//! Runs the whole pipeline from another Rust program: chunk the files named on the
//! command line, compress and store them through two in-process workers into a local
//! bucket, and rebuild every one from the bucket alone.
//!
//! ```sh
//! cargo run -p panini --example pipeline -- photo.png movie.mp4
//! ```

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let files: Vec<std::path::PathBuf> = std::env::args_os().skip(1).map(Into::into).collect();
    if files.is_empty() {
        eprintln!("usage: pipeline FILE...");
        return ExitCode::from(2);
    }
    let work = std::env::temp_dir().join(format!("panini-example-{}", std::process::id()));
    let mut config = panini::PipelineConfig::new(&work);
    config.files = files;
    let result = panini::Pipeline::new(config)
        .run(|event| {
            if let panini::PipelineEvent::Warning(message) = event {
                eprintln!("warning: {message}");
            }
        })
        .await;
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(report) => {
            for file in &report.files {
                let outcome = if file.verified {
                    "rebuilt bit for bit"
                } else {
                    "FAILED"
                };
                println!("{}: {} chunks, {outcome}", file.name, file.chunks);
            }
            if report.unverified().next().is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}
