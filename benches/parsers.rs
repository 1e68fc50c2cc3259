//! Micro-benchmarks of the pure layers on the request path: the head parser, the
//! chunked decoder, `Upload-Metadata` parsing, the `.info` record and the hook message.
//!
//! ```sh
//! cargo bench --bench parsers              # full statistics
//! cargo bench --bench parsers -- --quick   # a few seconds per benchmark
//! cargo bench --bench parsers -- chunked   # only the benchmarks whose name matches
//! ```
//!
//! The inputs are built once, outside the timed loops, and checked to parse, so a
//! change that makes one of them fail fails the benchmark instead of timing an error.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use tusring::hooks::payload::{render, RequestPart};
use tusring::hooks::Format;
use tusring::http::body::{ChunkedDecoder, Step};
use tusring::http::head::parse_head;
use tusring::storage::info::UploadInfo;
use tusring::tus::metadata::{parse_upload_metadata, Metadata};

const UPLOAD_PATH: &str = "/files/5b0e4b1e-6c0f-4a57-9d1e-2f7b8c3a9d40";

/// A PATCH as tus-js-client sends it.
fn patch_head() -> Vec<u8> {
    format!(
        "PATCH {UPLOAD_PATH} HTTP/1.1\r\n\
         Host: 127.0.0.1:1081\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) tus-js-client/4.1.0\r\n\
         Accept: */*\r\n\
         Tus-Resumable: 1.0.0\r\n\
         Upload-Offset: 52428800\r\n\
         Content-Type: application/offset+octet-stream\r\n\
         Content-Length: 8388608\r\n\
         Origin: http://localhost:8080\r\n\
         Connection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

const METADATA: &str = "filename cmVwb3J0LTIwMjYtcTMucGRm,filetype YXBwbGljYXRpb24vcGRm,\
    name cmVwb3J0LTIwMjYtcTMucGRm,type YXBwbGljYXRpb24vcGRm,\
    relativePath bnVsbA==,lastModified MTc5NTgwMTIwNzAwMA==";

/// A creation POST with the usual browser metadata.
fn post_head() -> Vec<u8> {
    format!(
        "POST /files HTTP/1.1\r\n\
         Host: 127.0.0.1:1081\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) tus-js-client/4.1.0\r\n\
         Accept: */*\r\n\
         Tus-Resumable: 1.0.0\r\n\
         Upload-Length: 104857600\r\n\
         Upload-Metadata: {METADATA}\r\n\
         Content-Length: 0\r\n\
         Origin: http://localhost:8080\r\n\
         Connection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

/// A PATCH head padded with large fields to about 60 KiB (the limit is 64 KiB).
fn huge_head() -> Vec<u8> {
    let mut head = patch_head();
    head.truncate(head.len() - 2); // reopen the head: drop the final blank line
    let value = "v".repeat(1000);
    let mut i = 0;
    while head.len() < 60 * 1024 {
        head.extend_from_slice(format!("X-Padding-{i:02}: {value}\r\n").as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn bench_head(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_head");
    for (name, head) in [
        ("patch", patch_head()),
        ("post_metadata", post_head()),
        ("60KiB", huge_head()),
    ] {
        let parsed = parse_head(&head);
        assert!(
            matches!(parsed, Ok(Some((_, n))) if n == head.len()),
            "{name}: {parsed:?}"
        );
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_head(black_box(&head))));
    }
    g.finish();
}

/// `total` bytes of body in chunks of `chunk` bytes, then the last chunk.
fn chunked_body(total: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total + total / chunk * 12 + 5);
    let mut left = total;
    let mut byte = 0u8;
    while left > 0 {
        let n = chunk.min(left);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend((0..n).map(|_| {
            byte = byte.wrapping_mul(31).wrapping_add(7);
            byte
        }));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Decodes a whole chunked body given in one slice; returns the data bytes seen.
fn decode_all(input: &[u8]) -> usize {
    let mut dec = ChunkedDecoder::new();
    let mut pos = 0;
    let mut data = 0;
    loop {
        match dec.decode(&input[pos..]) {
            Ok((n, Step::Data { start, end })) => {
                data += end - start;
                pos += n;
            }
            Ok((_, Step::Done)) => return data,
            Ok((_, Step::NeedMore)) | Err(_) => panic!("bad chunked body at {pos}"),
        }
    }
}

fn bench_chunked(c: &mut Criterion) {
    const TOTAL: usize = 1 << 20;
    let mut g = c.benchmark_group("chunked_1MiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    for (name, chunk) in [("16KiB_chunks", 16 << 10), ("64B_chunks", 64)] {
        let body = chunked_body(TOTAL, chunk);
        assert_eq!(decode_all(&body), TOTAL);
        g.bench_function(name, |b| b.iter(|| decode_all(black_box(&body))));
    }
    g.finish();
}

fn bench_metadata(c: &mut Criterion) {
    let mut g = c.benchmark_group("upload_metadata");
    // 200 pairs of a 40-byte value: about 14 KiB, near the 16 KiB limit.
    let large: String = (0..200)
        .map(|i| format!("key{i:03} {}", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3"))
        .collect::<Vec<_>>()
        .join(",");
    for (name, value) in [("browser_6_pairs", METADATA.to_owned()), ("14KiB", large)] {
        assert!(parse_upload_metadata(value.as_bytes()).is_ok(), "{name}");
        g.throughput(Throughput::Bytes(value.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_upload_metadata(black_box(value.as_bytes())))
        });
    }
    g.finish();
}

/// The record of a half-done upload with browser metadata.
fn sample_info() -> UploadInfo {
    let mut metadata = Metadata::new();
    metadata.insert("filename".into(), "report-2026-q3.pdf".into());
    metadata.insert("filetype".into(), "application/pdf".into());
    metadata.insert("relativePath".into(), "null".into());
    let mut info = UploadInfo::new(
        UPLOAD_PATH
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
        Some(104_857_600),
        1_795_801_207,
        metadata,
    );
    info.offset = 52_428_800;
    info.path = Some(format!("/var/lib/tusring/data/{}", info.id));
    info
}

fn bench_info(c: &mut Criterion) {
    let info = sample_info();
    let json = info.to_json();
    assert_eq!(UploadInfo::from_json(&json).ok().as_ref(), Some(&info));

    let mut g = c.benchmark_group("upload_info");
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("to_json", |b| b.iter(|| black_box(&info).to_json()));
    g.bench_function("from_json", |b| {
        b.iter(|| UploadInfo::from_json(black_box(&json)))
    });
    g.finish();
}

/// The message of a post-create hook for the POST of [`post_head`].
fn bench_hook_payload(c: &mut Criterion) {
    let head = post_head();
    let Ok(Some((head, _))) = parse_head(&head) else {
        panic!("post head does not parse");
    };
    let info = sample_info();
    let peer = "127.0.0.1:50312".parse().expect("a socket address");
    let request = RequestPart::new(&head, "POST", "/files", Some(&info.id), peer, false);
    let mut g = c.benchmark_group("hook_payload");
    g.bench_function("request_part", |b| {
        b.iter(|| {
            RequestPart::new(
                black_box(&head),
                "POST",
                "/files",
                Some(&info.id),
                peer,
                false,
            )
        })
    });
    for (name, format) in [
        ("render_default", Format::Default),
        ("render_tusd", Format::Tusd),
    ] {
        assert!(render(format, &info, &request).starts_with('{'), "{name}");
        g.bench_function(name, |b| {
            b.iter(|| render(format, black_box(&info), &request))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_head,
    bench_chunked,
    bench_metadata,
    bench_info,
    bench_hook_payload
);
criterion_main!(benches);
