//! Compiles the subset of etcd's v3 API the load generator uses with protox (pure Rust), as
//! the rest of the workspace does: the `etcd-client` crate's build script needs a system
//! `protoc`, which neither this machine nor the project's CI has.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/etcdserverpb/kv.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
