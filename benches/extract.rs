//! Unpacking in-memory snapshots: many small source-like files, and a few large ones half
//! text and half random bytes. Targets a tmpfs where there is one, since file creation on
//! a disk is noise here.

use std::io::Cursor;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flate2::Compression;
use flate2::write::GzEncoder;
use task_agent::snapshot::{Budget, unpack_archive};

fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, &data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so every run packs the same archive.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn source_like(len: usize, seed: usize) -> Vec<u8> {
    let line = format!("def handler_{seed}(event, context):  # returns the transformed record\n");
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

fn scratch_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn bench(c: &mut Criterion) {
    // `cargo test` runs each bench once in a debug build to keep it from rotting: there,
    // small inputs; `cargo bench` passes --bench and gets the real sizes.
    let full = std::env::args().any(|a| a == "--bench");
    let (small_count, large_size) = if full {
        (2000, 16 << 20)
    } else {
        (100, 1 << 20)
    };
    let small: Vec<(String, Vec<u8>)> = (0..small_count)
        .map(|i| {
            (
                format!("pkg{}/module_{i}.py", i % 40),
                source_like(3000 + i % 2000, i),
            )
        })
        .collect();
    let large: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let data = if i % 2 == 0 {
                source_like(large_size, i)
            } else {
                noise(large_size, i as u64 + 1)
            };
            (format!("data/blob_{i}.bin"), data)
        })
        .collect();
    let mut group = c.benchmark_group("extract");
    group.sample_size(10);
    for (name, files) in [("many_small_files", &small), ("few_large_files", &large)] {
        let raw: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
        let packed = archive(files);
        group.throughput(Throughput::Bytes(raw));
        group.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir_in(scratch_root()).unwrap(),
                |dir| {
                    unpack_archive(Cursor::new(&packed), dir.path(), Budget::default()).unwrap();
                    dir
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
