//! Compiles the protos with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ferrisdb/v1/types.proto",
        "proto/ferrisdb/v1/compute.proto",
        "proto/ferrisdb/v1/safekeeper.proto",
        "proto/ferrisdb/v1/pageserver.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Our codec: undecodable protobuf is `invalid_argument`, not prost's INTERNAL.
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
